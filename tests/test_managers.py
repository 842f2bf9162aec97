"""The managers alone, built from the service's parts (a real database, a local store), without
HTTP: the file manager's admission, storing, reading and deleting, slot dedup; the account
manager's token check."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from pymongo.errors import AutoReconnect

from models.criteria import Criteria, Page
from models.db import utcnow
from services.context import Context, Parts
from services.errors import Forbidden, QuotaExceeded, RateLimited, TooLarge, WriteFailed
from services.files import FileManager, Overflow, UploadMeta
from services.prosody_share import sign
from tests.helpers import GIF, issue_token, opaque, sha256, staging

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture
async def ctx(parts: Parts) -> Context:
    for jid in (ALICE, BOB):
        await parts.users.ensure(jid)
    return Context.build(parts)


@pytest.fixture
def files(ctx: Context) -> FileManager:
    return ctx.files


async def put(files: FileManager, owner: str, data: bytes, name: str = "a.bin", is_avatar: bool = False) -> dict:
    """An upload as a route makes it: admitted, fed, stored."""
    admission = await files.admit(owner, length=len(data))
    try:
        incoming = files.incoming(admission)
        incoming.feed(data)
        await incoming.pump()
        return await files.store_upload(owner, incoming, UploadMeta(name=name, is_avatar=is_avatar))
    finally:
        admission.close()


async def read(files: FileManager, slot_id: str, name: str) -> bytes:
    found = await files.download(slot_id, name)
    assert found is not None
    out = bytearray()
    async for view in files.read(found, 0, found.size):
        out += view
    return bytes(out)


async def test_admission_refuses_what_is_too_large(files):
    files.limits.max_file_size = 1000
    for kwargs in ({"declared": 1001}, {"length": 1101, "slack": 100}, {"length": 2000}):
        with pytest.raises(TooLarge) as refused:
            await files.admit(ALICE, **kwargs)
        assert refused.value.status == 413 and str(refused.value) == "file too large: at most 1000 bytes"
    admission = await files.admit(ALICE, length=1100, slack=100, declared=1000)
    assert admission.limit == 1000
    admission.close()
    assert not files.gate.active  # a refusal leaves the gate as it found it


async def test_admission_refuses_what_the_quota_cannot_hold(files, parts):
    await parts.users.set_quota(ALICE, 500)
    for kwargs in ({"declared": 501}, {"length": 650, "slack": 100}):
        with pytest.raises(QuotaExceeded) as refused:
            await files.admit(ALICE, **kwargs)
        assert refused.value.status == 403
    admission = await files.admit(ALICE, declared=500)
    assert admission.limit == 500 and admission.quota.available == 500
    admission.close()
    assert not files.gate.active


async def test_admission_rate_limits_per_window_and_at_once(files):
    files.limits.uploads_per_window = 2
    for _ in range(2):
        (await files.admit(ALICE)).close()
    with pytest.raises(RateLimited) as refused:
        await files.admit(ALICE)
    assert refused.value.status == 429 and 1 <= refused.value.retry_after <= files.limits.upload_window
    (await files.admit(BOB)).close()  # counted per owner
    files.limits.uploads_per_window = 1000
    files.gate.per_user = 1
    first = await files.admit(BOB)
    with pytest.raises(RateLimited) as refused:
        await files.admit(BOB)
    assert refused.value.status == 429 and refused.value.retry_after == 1
    first.close()
    (await files.admit(BOB)).close()
    assert not files.gate.active


async def test_store_list_stats_download_delete(files, parts):
    data = opaque(200_000)
    doc = await put(files, ALICE, data, "report.bin")
    assert (doc["owner"], doc["name"], doc["size"]) == (ALICE, "report.bin", len(data))
    assert doc["sha256"] == sha256(data) and doc["media_type"] == "application/octet-stream"
    assert await parts.store.size(sha256(data)) == len(data)
    assert staging(parts.store) == []

    listing = await files.list(ALICE, Criteria(), Page())
    assert listing["total_objects"] == 1 and [item["slot_id"] for item in listing["items"]] == [doc["slot_id"]]
    assert (await files.list(BOB, Criteria(), Page()))["total_objects"] == 0
    stats = await files.stats(ALICE, Criteria())
    assert stats["files"] == {"count": 1, "used": len(data)} and stats["total"] == {"count": 1, "used": len(data)}
    assert stats["used"] == len(data)
    assert (await files.stats(ALICE, Criteria(media_type="image")))["total"] == {"count": 0, "used": 0}

    found = await files.download(doc["slot_id"], "report.bin")
    assert found is not None and found.size == len(data) and found.derived is None
    assert found.etag == f'"{sha256(data)}"'
    assert await read(files, doc["slot_id"], "report.bin") == data
    assert await files.download(doc["slot_id"], "other.bin") is None
    assert await files.download("no-such-slot", "report.bin") is None

    assert await files.delete(ALICE, Criteria(ids=[str(doc["_id"])]), None) == 1
    assert await files.delete(ALICE, Criteria(ids=[str(doc["_id"])]), None) == 0
    assert (await files.list(ALICE, Criteria(), Page()))["total_objects"] == 0
    assert await files.download(doc["slot_id"], "report.bin") is None
    assert await parts.store.size(sha256(data)) is None  # the last reference took the content
    assert (await files.quota(ALICE)).used == 0


async def test_same_content_is_kept_once_until_its_last_file_goes(files, parts):
    a, b = await put(files, ALICE, GIF, "a.gif"), await put(files, BOB, GIF, "b.gif")
    assert a["media_type"] == b["media_type"] == "image/gif"
    assert await parts.store.contents() == {sha256(GIF)}
    assert (await parts.db.blobs.find_one({"_id": sha256(GIF)}))["refs"] == 2
    assert await files.delete(ALICE, Criteria(), None) == 1
    assert await read(files, b["slot_id"], "b.gif") == GIF
    assert await files.delete(BOB, Criteria(), None) == 1
    assert await parts.store.contents() == set()


async def test_slot_dedups_within_the_owners_files(files, parts):
    data = opaque(5000)
    first = await put(files, ALICE, data, "one.bin")
    doc = await files.slot(ALICE, sha256(data), len(data), "two.bin")
    assert "slot_id" in doc and doc["slot_id"] != first["slot_id"] and doc["name"] == "two.bin"
    assert doc["sha256"] == first["sha256"] and doc["used"] == 2 * len(data)
    assert await read(files, doc["slot_id"], "two.bin") == data
    assert (await parts.db.blobs.find_one({"_id": sha256(data)}))["refs"] == 2
    # bob has no such file: he must upload it
    answer = await files.slot(BOB, sha256(data), len(data), "mine.bin")
    assert set(answer) == {"quota", "used"} and answer["used"] == 0
    # another size: no match
    answer = await files.slot(ALICE, sha256(data), len(data) + 1, "three.bin")
    assert set(answer) == {"quota", "used"}


async def test_slot_refusals(files, parts):
    files.limits.max_file_size = 10_000
    with pytest.raises(TooLarge):
        await files.slot(ALICE, "0" * 64, 10_001, "big.bin")
    data = opaque(3000)
    await put(files, ALICE, data)
    await parts.users.set_quota(ALICE, 5000)
    with pytest.raises(QuotaExceeded):  # a second copy of what she has would pass her quota
        await files.slot(ALICE, sha256(data), len(data), "again.bin")
    assert (await files.quota(ALICE)).used == len(data)


async def test_slot_for_content_no_longer_stored_asks_for_an_upload(files, parts):
    data = opaque(4000)
    await put(files, ALICE, data)
    await parts.store.remove(sha256(data))  # what a lost volume leaves
    answer = await files.slot(ALICE, sha256(data), len(data), "again.bin")
    assert set(answer) == {"quota", "used"} and answer["used"] == len(data)
    assert (await files.quota(ALICE)).used == len(data)  # the reservation for the link was given back
    assert (await parts.db.blobs.find_one({"_id": sha256(data)}))["refs"] == 1


async def test_an_upload_past_its_admission_overflows(files, parts):
    files.limits.max_file_size = 10_000
    admission = await files.admit(ALICE)
    incoming = files.incoming(admission)
    incoming.feed(b"x" * 10_000)
    with pytest.raises(Overflow):
        incoming.feed(b"x")
    assert isinstance(files.overflow(10_001), TooLarge)
    await incoming.discard()
    admission.close()
    await parts.users.set_quota(ALICE, 100)
    admission = await files.admit(ALICE)
    assert admission.limit == 100
    assert isinstance(files.overflow(101), QuotaExceeded)
    admission.close()
    assert staging(parts.store) == [] and await parts.store.contents() == set()


async def test_an_upload_the_quota_no_longer_holds_keeps_nothing(files, parts):
    data = opaque(3000)
    admission = await files.admit(ALICE, length=len(data))
    incoming = files.incoming(admission)
    incoming.feed(data)
    await parts.users.set_quota(ALICE, 1000)  # another upload took the room meanwhile
    with pytest.raises(QuotaExceeded):
        await files.store_upload(ALICE, incoming, UploadMeta(name="late.bin"))
    admission.close()
    assert staging(parts.store) == [] and await parts.store.contents() == set()
    assert (await files.quota(ALICE)).used == 0
    assert (await files.list(ALICE, Criteria(), Page()))["total_objects"] == 0


async def test_concurrent_uploads_of_one_content_keep_it_once(files, parts):
    data = opaque(100_000)
    docs = await asyncio.gather(*(put(files, ALICE, data, f"f{i}.bin") for i in range(8)))
    assert len({doc["slot_id"] for doc in docs}) == 8
    assert await parts.store.contents() == {sha256(data)}
    assert (await parts.db.blobs.find_one({"_id": sha256(data)}))["refs"] == 8
    assert staging(parts.store) == []


async def test_account_manager_verifies_tokens(ctx, parts):
    issued = await issue_token(parts, ALICE)
    info = await ctx.accounts.verify_token(issued.token)
    assert info is not None and (info.owner, info.token_id) == (ALICE, issued.token_id)
    assert await ctx.accounts.verify_token("not-a-token") is None
    assert await ctx.accounts.verify_token("") is None
    expired = await issue_token(parts, ALICE)
    await parts.db.tokens.update_one({"_id": expired.token_id}, {"$set": {"expires": expired.expires.replace(year=2000)}})
    assert await ctx.accounts.verify_token(expired.token) is None
    revoked = await issue_token(parts, BOB)
    assert await parts.tokens.revoke(BOB, revoked.token_id)
    assert await ctx.accounts.verify_token(revoked.token) is None
    assert await ctx.accounts.verify_token(issued.token) is not None  # the others stay valid


async def test_slot_without_a_blob_document_keeps_the_stored_content(files, parts):
    """Regression: with the content's blob document gone (what fsck repairs), a slot request
    for that content removed its bytes from the store, and the file that has it lost them."""
    data = opaque(4000)
    doc = await put(files, ALICE, data, "kept.bin")
    await parts.db.blobs.delete_one({"_id": sha256(data)})
    answer = await files.slot(ALICE, sha256(data), len(data), "again.bin")
    assert set(answer) == {"quota", "used"}  # the client uploads it again
    assert await parts.store.size(sha256(data)) == len(data)
    assert await read(files, doc["slot_id"], "kept.bin") == data
    assert (await files.quota(ALICE)).used == len(data)


async def test_a_database_failure_before_the_insert_holds_no_quota_and_no_reference(files, parts, monkeypatch):
    """Regression: the file's id was drawn after the quota and the content's reference were
    taken, so a database failure there kept both for good."""

    async def down() -> int:
        raise AutoReconnect("the database went away")

    monkeypatch.setattr(parts.file_ids, "next", down)
    with pytest.raises(AutoReconnect):
        await put(files, ALICE, opaque(110))
    assert (await files.quota(ALICE)).used == 0
    assert await parts.db.blobs.count_documents({}) == 0
    assert staging(parts.store) == []


async def test_a_store_failure_gives_the_reference_back(files, parts, monkeypatch):
    """Regression: when keeping the bytes failed (a full volume), the content's reference stayed,
    so the blob document of content nobody has counted one reference for good."""

    def full(*_args: object) -> None:
        raise WriteFailed("No space left on device")

    monkeypatch.setattr(parts.store, "_commit", full)
    with pytest.raises(WriteFailed):
        await put(files, ALICE, opaque(300))
    assert (await files.quota(ALICE)).used == 0
    assert await parts.db.blobs.count_documents({}) == 0


async def test_prosody_share_refuses_denied_jids(parts):
    """Regression: Prosody's signed PUTs skipped auth.deny and auth.allow_domains."""
    parts.settings.auth.deny = ["mallory@example.org"]
    parts.settings.prosody_share.secret = "s3cret"
    share = Context.build(parts).prosody_share
    claims = {"sub": "mallory@example.org", "slot": "slot-0123456789", "filename": "f", "filesize": 1, "filetype": "a/b"}
    token = sign("s3cret", {**claims, "exp": int(time.time()) + 60})
    with pytest.raises(Forbidden):
        await share.admit("slot-0123456789", f"Bearer {token}", 1)
    assert await parts.db.users.find_one({"_id": "mallory@example.org"}) is None


async def test_percent_of_avatars_selects_and_deletes_them_when_they_never_reach_it(files, parts):
    """Regression: a selection that never reaches n % (avatars only, beside a larger file) is
    read as ids; they lost the `contexts` that bring avatars in, so none were listed or deleted."""
    await put(files, ALICE, opaque(1000), "big.bin")
    await put(files, ALICE, opaque(10), "face.bin", is_avatar=True)
    selected = await files.oldest(ALICE, 100, ["avatar"])
    listed = await files.list(ALICE, selected, Page(), False)
    assert [item["name"] for item in listed["items"]] == ["face.bin"]
    assert (await files.delete_answer(ALICE, selected, False))["deleted"] == 1
    assert (await files.quota(ALICE)).used == 1000


async def test_delete_percent_of_all_leaves_a_file_uploaded_while_it_runs(files, parts, monkeypatch):
    """A selection that never reaches n % (100 % beside an avatar) is all of it, up to the moment
    it was taken: a file uploaded while the DELETE runs stays."""
    await put(files, ALICE, opaque(1000), "old.bin")
    await put(files, ALICE, opaque(10), "face.bin", is_avatar=True)
    matching = files._files.matching

    async def upload_meanwhile(*args):
        await asyncio.sleep(0.01)
        await put(files, ALICE, opaque(500), "new.bin")
        return await matching(*args)

    monkeypatch.setattr(files._files, "matching", upload_meanwhile)
    assert (await files.delete_oldest(ALICE, 100, None))["deleted"] == 1
    listed = await files.list(ALICE, Criteria(), Page(), False)
    assert [item["name"] for item in listed["items"]] == ["new.bin"]


async def test_percent_of_a_selection_inside_one_hour_reads_the_owners_bytes(files, parts):
    """Regression: the share was taken from the account counters the segments' read brings,
    which reads none when the dates lie inside one hour: the target was 0, the selection empty."""
    for size in (100, 200, 300):
        await put(files, ALICE, opaque(size))
    now = utcnow()
    within = Criteria(date_gte=now - dt.timedelta(minutes=1), date_lte=now + dt.timedelta(seconds=1))
    selection = await files._files.oldest_reaching(ALICE, within, False, percent=100)
    assert selection.ids != [] and len(await files._files.matching(ALICE, selection, False)) == 3


async def test_percent_counts_the_files_not_pending_reservations(files, parts):
    """Regression: files/percent/ took n % of `used`, which also holds issued XEP-0363 slots'
    reservations, so 50 % could select every file."""
    for size in (1000, 1000, 1000, 1000):
        await put(files, ALICE, opaque(size))
    assert await parts.users.reserve(ALICE, 4000)  # what an issued, unused 4000-byte slot holds
    selected = await files.oldest(ALICE, 50, None)
    assert (await files.list(ALICE, selected, Page(), False))["total_objects"] == 2


async def test_a_slot_dedup_hit_costs_seven_commands_and_a_miss_two(files, parts):
    """A dedup hit: the content lookup, the quota reservation (which is the quota check), the
    content reference (its document not read), the file, its counters, the quota for the
    answer. A miss: the lookup and the quota. Over quota, a hit is refused and holds nothing."""
    data = opaque(3000)
    await put(files, ALICE, data, "one.bin")
    await files._ids.next()  # an id block in hand: its draw (1 in 64 files) is not counted here
    assert await files.gate.drain(5) == 0  # the upload's lease given back (in the background)
    files.gate.closed = False
    sent: list[str] = []
    parts.db.commands.count = sent.append
    try:
        doc = await files.slot(ALICE, sha256(data), len(data), "two.bin")
        assert doc["used"] == 2 * len(data) and doc["name"] == "two.bin"
        assert sent == ["find", "update", "update", "insert", "update", "find"]
        sent.clear()
        answer = await files.slot(ALICE, sha256(opaque(3000)), 3000, "new.bin")
        assert answer == {"quota": parts.settings.quota.default, "used": 2 * len(data)}
        assert sent == ["find", "find"]
        await parts.users.set_quota(ALICE, 2 * len(data) + 100)
        with pytest.raises(QuotaExceeded):
            await files.slot(ALICE, sha256(data), len(data), "three.bin")
    finally:
        parts.db.commands.count = lambda name: None
    assert (await files.quota(ALICE)).used == 2 * len(data)
    assert (await parts.db.blobs.find_one({"_id": sha256(data)}))["refs"] == 2
    assert (await files.list(ALICE, Criteria(), Page()))["total_objects"] == 2


async def test_a_small_upload_costs_ten_commands(files, parts):
    """An upload of new content that the imaging does not look at, as the REST route makes it
    (the token's read aside): its slot lease and the global count, the admission's quota read and
    rate-limit hit, the reservation, the content's reference (one upsert), the file, its counters,
    the quota for the answer, the lease given back."""
    await put(files, ALICE, opaque(100), "first.bin")
    await files._ids.next()  # an id block in hand: its draw (1 in 64 files) is not counted here
    assert await files.gate.drain(5) == 0
    files.gate.closed = False
    sent: list[str] = []
    parts.db.commands.count = sent.append
    try:
        doc = await put(files, ALICE, opaque(4096), "small.bin")
        assert (await files.quota(ALICE)).used == 100 + 4096
        assert await files.gate.drain(5) == 0
    finally:
        parts.db.commands.count = lambda name: None
    assert doc["size"] == 4096
    # (the lease's delete runs in the background, beside the answer's read)
    assert sent[:8] == ["insert", "aggregate", "find", "update", "update", "update", "insert", "update"]
    assert sorted(sent[8:]) == ["delete", "find"]
