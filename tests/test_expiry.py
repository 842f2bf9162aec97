"""Expiry: retention per purpose, `expires_at` in the file object, 404 from the moment a file
expires, the sweeper that removes it as a delete would (in several processes at once), fsck."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient, monitoring

import settings as settings_module
from models.db import Database
from models.files import Files
from server import Service
from services.context import Context, Parts
from services.expiry import ExpirySweeper
from services.fsck import fsck
from services.retention import expired, expiry_for
from settings import RetentionSettings, SettingsError
from storage.backends import close_store, open_store
from tests.helpers import GIF, assert_error, login, opaque, sha256, stored, upload, wait_until

SECOND = 1 / 86400  # retention is in days
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


# -- the rule -----------------------------------------------------------------------------------


def test_expiry_for_takes_the_earliest_deadline():
    keep = RetentionSettings()
    assert expiry_for("message", None, NOW, keep) is None  # the defaults keep files until deleted
    assert expiry_for(None, None, NOW, keep) is None
    week = RetentionSettings(message=7, ephemeral=1, profile=365, permanent=0, default=30)
    assert expiry_for("message", None, NOW, week) == NOW + dt.timedelta(days=7)
    assert expiry_for("profile", None, NOW, week) == NOW + dt.timedelta(days=365)
    assert expiry_for("avatar", None, NOW, week) == NOW + dt.timedelta(days=365)  # avatars: profile
    assert expiry_for("permanent", None, NOW, week) is None
    assert expiry_for(None, None, NOW, week) == NOW + dt.timedelta(days=30)
    assert expiry_for("holiday photos", None, NOW, week) == NOW + dt.timedelta(days=30)
    # the uploader's deadline is never exceeded, and a longer one does not extend retention
    soon = NOW + dt.timedelta(hours=2)
    assert expiry_for("ephemeral", soon, NOW, week) == soon
    assert expiry_for("ephemeral", NOW + dt.timedelta(days=9), NOW, week) == NOW + dt.timedelta(days=1)
    assert expiry_for("permanent", soon, NOW, week) == soon
    # naive = UTC; other offsets are converted; rounded down to the database's milliseconds
    assert expiry_for("message", dt.datetime(2026, 12, 2), NOW, keep) == dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    later = dt.datetime(2026, 12, 2, 1, 0, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert expiry_for("message", later, NOW, keep) == dt.datetime(2026, 12, 2, 0, 0, 0, 999000, tzinfo=dt.UTC)
    assert not expired(None, NOW) and expired(NOW, NOW) and not expired(NOW + dt.timedelta(seconds=1), NOW)


def test_retention_settings_from_yaml_and_environment(tmp_path):
    loaded = settings_module.load(Path("/nonexistent"), env={})
    assert loaded.retention == RetentionSettings()  # keep everything, sweep every 30 s
    assert loaded.retention.sweep_interval == 30 and loaded.prosody_share.secret == ""
    env = {"GALLERY_RETENTION_MESSAGE": "7", "GALLERY_RETENTION_EPHEMERAL": "", "GALLERY_RETENTION_PROFILE": "0.5"}
    loaded = settings_module.load(Path("/nonexistent"), env=env)
    assert (loaded.retention.message, loaded.retention.ephemeral, loaded.retention.profile) == (7, 0, 0.5)
    config = tmp_path / "settings.yaml"
    config.write_text("retention:\n  default: 30\n  permanent:\nprosody_share:\n  secret: s3cret\n  path: /files/share/\n")
    loaded = settings_module.load(config, env={})
    assert loaded.retention.default == 30 and loaded.retention.permanent == 0
    assert loaded.prosody_share.path == "/files/share"  # the trailing slash is dropped
    for bad in (
        {"GALLERY_RETENTION_MESSAGE": "-1"},
        {"GALLERY_RETENTION_MESSAGE": "a week"},
        {"GALLERY_RETENTION_MESSAGE": "nan"},
        {"GALLERY_RETENTION_SWEEP_INTERVAL": "0"},
        {"GALLERY_RETENTION_SWEEP_BATCH": "0"},
        {"GALLERY_PROSODY_SHARE_PATH": "share"},
        {"GALLERY_PROSODY_SHARE_PATH": "/media"},
        {"GALLERY_PROSODY_SHARE_PATH": "/"},
    ):
        with pytest.raises(SettingsError) as caught:
            settings_module.load(Path("/nonexistent"), env=bad)
        key = next(iter(bad)).removeprefix("GALLERY_").lower()
        assert str(caught.value).replace(".", "_").startswith(key), caught.value


# -- the service --------------------------------------------------------------------------------


@pytest.fixture
async def short_lived(make_service) -> Service:
    """The service with REST uploads kept one second and the sweeper every 0.2 s."""
    return await make_service(retention={"default": SECOND, "sweep_interval": 0.2})


async def _used(service: Service, jid: str) -> int:
    assert service.ctx is not None
    return (await service.parts.users.quota(jid)).used


async def test_files_are_kept_until_deleted_by_default(client, alice, service):
    body = (await upload(client, alice, opaque(100), "kept.bin")).json()
    assert body["expires_at"] is None
    listed = (await client.get("/api/v1/files/", headers=alice)).json()["items"]
    assert listed[0]["expires_at"] is None
    assert await service.expiry.sweep() == 0


async def test_an_expired_file_404s_at_once_and_the_sweeper_removes_it(short_lived, settings):
    service = short_lived
    jid = "alice@example.org"
    headers = await login(service, jid)
    data = opaque(5000)
    async with httpx.AsyncClient(base_url=service.url) as client:
        before = dt.datetime.now(dt.UTC)
        r = await upload(client, headers, data, "brief.bin")
        assert r.status_code == 201, r.text
        body = r.json()
        expires_at = dt.datetime.fromisoformat(body["expires_at"])
        assert before + dt.timedelta(seconds=0.9) <= expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        assert (await client.get(body["file"])).content == data
        assert await _used(service, jid) == len(data)
        # from expires_at on the link is dead, even before the sweeper came by
        await service.expiry.stop()
        await asyncio.sleep(max(0.0, (expires_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
        assert_error(await client.get(body["file"]), 404)
        assert (await client.head(body["file"])).status_code == 404
        assert await service.parts.files.by_slot(body["slot_id"], expires_at - dt.timedelta(seconds=1)) is not None
        # the sweeper removes it as a delete would: document, quota, counters, content
        service.expiry.start()

        async def gone() -> bool:  # the file, then its quota, then its content: the delete's order
            listed = (await client.get("/api/v1/files/", headers=headers)).json()["total_objects"]
            return not listed and await service.parts.db.blobs.find_one({"_id": sha256(data)}) is None

        await wait_until(gone, within=5, message="the sweeper to remove the expired file")  # it runs every 0.2 s
        assert await _used(service, jid) == 0
        stats = (await client.get("/api/v1/files/stats/", headers=headers)).json()
        assert stats["total"] == {"count": 0, "used": 0}
        assert await service.parts.db.blobs.find_one({"_id": sha256(data)}) is None
        assert not await stored(service, sha256(data))
        assert service.expiry.removed == 1
        metrics = (await client.get("/metrics")).text
        assert "gallery_files_expired_total 1.0" in metrics


async def test_content_another_file_still_uses_stays(short_lived, settings):
    """Expiry drops one reference: content kept by a file that does not expire stays stored."""
    service = short_lived
    await service.expiry.stop()
    jid = "alice@example.org"
    headers = await login(service, jid)
    data = GIF
    async with httpx.AsyncClient(base_url=service.url) as client:
        brief = (await upload(client, headers, data, "brief.gif")).json()
        # a file of another context that is kept (retention.profile is 0)
        kept = (await upload(client, headers, data, "kept.gif", context="profile")).json()
        assert kept["expires_at"] is None and brief["expires_at"] is not None
        assert brief["thumbnail"] is not None
        await asyncio.sleep(1.1)
        assert await service.expiry.sweep() == 1
        assert (await client.get(kept["file"])).content == data
        assert (await client.get(kept["thumbnail"]["url"])).status_code == 200
        assert_error(await client.get(brief["thumbnail"]["url"]), 404)
        assert await _used(service, jid) == len(data)
        assert (await service.parts.db.blobs.find_one({"_id": sha256(data)}))["refs"] == 1


async def test_two_sweepers_at_once_remove_each_file_once(short_lived, settings):
    """Two processes' sweepers (each with its own database client) racing over the same expired
    files: every file is removed once, quota and references are released once."""
    service = short_lived
    await service.expiry.stop()
    jid = "bob@example.org"
    headers = await login(service, jid)
    count = 12
    async with httpx.AsyncClient(base_url=service.url) as client:
        sizes = [1000 + i for i in range(count)]
        for size in sizes:
            assert (await upload(client, headers, opaque(size), f"f{size}.bin")).status_code == 201
        shared = opaque(777)  # the same content in three files: three references
        for i in range(3):
            assert (await upload(client, headers, shared, f"shared{i}.bin")).status_code == 201
    total = sum(sizes) + 3 * len(shared)
    assert await _used(service, jid) == total
    other_db = Database(settings.mongodb.uri, settings.mongodb.database)
    other_store = open_store(settings, settings.mongodb.uri)  # the other process's view of the store
    try:
        other_files = Context.build(Parts(settings=settings, db=other_db, store=other_store)).files
        other = ExpirySweeper(other_files, interval=30, batch=4)  # several batches each
        service.expiry.batch = 4
        await asyncio.sleep(1.1)
        removed = await asyncio.gather(service.expiry.sweep(), other.sweep(), other.sweep())
    finally:
        close_store(other_store)
        await other_db.close()
    assert sum(removed) == count + 3
    assert await _used(service, jid) == 0
    assert await service.parts.files.counts(jid) == await service.parts.files.counts("nobody@example.org")
    assert await service.parts.db.blobs.find_one({"_id": sha256(shared)}) is None
    assert not await stored(service, sha256(shared))
    assert await service.parts.store.contents() == set()


async def test_fsck_removes_expired_files(short_lived, settings):
    """With the service down the sweeper does not run; fsck removes what expired meanwhile."""
    service = short_lived
    await service.expiry.stop()
    jid = "carol@example.org"
    headers = await login(service, jid)
    data = opaque(3000)
    async with httpx.AsyncClient(base_url=service.url) as client:
        gone = (await upload(client, headers, data, "gone.bin")).json()
        kept = (await upload(client, headers, opaque(10), "kept.bin", context="permanent")).json()
    await asyncio.sleep(1.1)
    ctx = service.parts
    report = await fsck(service.parts)
    assert report.expired_removed == 1 and report.repaired
    assert "expired removed: 1" in report.lines()
    assert await ctx.files.slot_taken(gone["slot_id"]) is False
    assert await ctx.files.slot_taken(kept["slot_id"]) is True
    assert await _used(service, jid) == 10
    assert not await stored(service, sha256(data))
    assert (await fsck(service.parts)).expired_removed == 0


async def test_room_at_says_when_expiring_files_and_pending_reservations_free_enough(client, service):
    """The one "retry at" rule (the XEP-0363 component's `<retry stamp>`): when the owner's
    expiring files, removed by the sweeper within `retention.sweep_interval` of their expiry, and
    other pending reservations (issued slots, released at their own moment) free the bytes asked
    for; rounded up to a whole second."""
    jid = "dave@example.org"
    headers = await login(service, jid)
    service.settings.retention.ephemeral = 1  # day; other contexts are kept
    sweep = dt.timedelta(seconds=service.settings.retention.sweep_interval)
    files = service.ctx.files

    def whole(moment: dt.datetime) -> dt.datetime:
        return moment.replace(microsecond=0) + dt.timedelta(seconds=1) if moment.microsecond else moment

    await service.parts.users.set_quota(jid, 10_000)
    now = dt.datetime.now(dt.UTC)
    before = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the service's clock counts milliseconds
    room = await files.room_at(jid, 10_000)
    assert room is not None and before <= room <= dt.datetime.now(dt.UTC)  # room already: now
    assert (await upload(client, headers, opaque(3000), "kept.bin")).status_code == 201
    first = (await upload(client, headers, opaque(2000), "e1.bin", context="ephemeral")).json()
    second = (await upload(client, headers, opaque(4000), "e2.bin", context="ephemeral")).json()
    assert first["expires_at"] and second["expires_at"]
    # an hour apart (a day's retention gives both the same second), the first not on a whole second
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    expires = {"e1.bin": now + dt.timedelta(hours=1, milliseconds=300), "e2.bin": now + dt.timedelta(hours=2)}
    for name, moment in expires.items():
        await service.parts.db.files.update_one({"name": name}, {"$set": {"expires_at": moment}})
    # 1000 bytes free; the first ephemeral file frees 2000 more, the second 4000 more
    room = await files.room_at(jid, 1000)
    assert room is not None and room <= dt.datetime.now(dt.UTC)
    first_at, second_at = whole(expires["e1.bin"] + sweep), whole(expires["e2.bin"] + sweep)
    assert first_at == now + dt.timedelta(hours=1, seconds=1) + sweep  # rounded up to a whole second
    assert await files.room_at(jid, 3000) == first_at
    assert await files.room_at(jid, 7000) == second_at
    assert await files.room_at(jid, 7001) is None  # the kept file never frees its room
    assert await files.room_at(jid, 10_001) is None  # more than the whole quota never fits
    # a reservation released sooner than the files (an issued slot expiring) comes first ...
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5, microseconds=1)
    assert await files.room_at(jid, 3000, [(soon, 2000)]) == whole(soon)
    # ... and adds up with them: 2000 + 2000 from the first file make 5000 with the free 1000
    assert await files.room_at(jid, 5000, [(soon, 2000)]) == first_at
    assert await files.room_at(jid, 9000, [(soon, 2000)]) == second_at
    # a quota lowered below what is used: the excess must go too (9000 used of 8000, 1500 more
    # needs 2500 freed: both files), not just the 1500 asked for
    await service.parts.users.set_quota(jid, 8000)
    assert await files.room_at(jid, 1500) == second_at
    await service.parts.users.set_quota(jid, 10_000)
    # a moment already past (a slot not swept yet) is now, never the past
    room = await files.room_at(jid, 3000, [(soon - dt.timedelta(hours=1), 2000)])
    assert room is not None and dt.timedelta(0) <= room - before <= dt.timedelta(seconds=30)


class _Finds(monitoring.CommandListener):
    """The filters of the `find` commands a client sends."""

    def __init__(self) -> None:
        self.filters: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(event.command["filter"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_the_sweepers_read_is_a_range_of_dates_not_every_file_that_never_expires(settings):
    """Regression: the sweeper asked for `expires_at <= now` alone. Files that never expire hold
    null there, which sorts before every date, so the index range began at the index's first
    entry: SecantusDB read and decoded every such file on each sweep (2.5 s at 100 000 files,
    a stall of every request every `sweep_interval`). The range now starts at the first date,
    and still finds a file that expired long ago."""
    finds = _Finds()
    client = AsyncMongoClient(settings.mongodb.uri, tz_aware=True, event_listeners=[finds])
    try:
        files = Files(client[settings.mongodb.database].files)
        await files.c.create_index("expires_at")

        def doc(file_id: int, expires_at: dt.datetime | None) -> dict:
            return {"_id": file_id, "owner": "a@example.org", "size": 1, "sha256": f"{file_id:064x}", "expires_at": expires_at}

        never = [doc(i, None) for i in range(5)]
        old, due = doc(99, dt.datetime(1900, 1, 1, tzinfo=dt.UTC)), doc(98, NOW - dt.timedelta(seconds=1))
        later = doc(97, NOW + dt.timedelta(days=1))
        await files.c.insert_many([*never, old, due, later])
        assert [doc["_id"] for doc in await files.expired(NOW, 10)] == [99, 98]
        (bounds,) = [f["expires_at"] for f in finds.filters if "expires_at" in f]
        assert "$lte" in bounds and isinstance(bounds.get("$gte", bounds.get("$gt")), dt.datetime)
    finally:
        await client.close()
