"""Per-owner file counters (stats and list totals read them) and newest-first pages read through
them: both must answer exactly what a scan of the owner's files would. Real sockets, real
database."""

from __future__ import annotations

import datetime as dt
import os

from services.fsck import fsck
from tests.helpers import GIF, WEBM, login, opaque, sha256, upload, wav

BUCKETS = ("images", "videos", "voices", "files", "avatars", "total")


async def _stats(client, headers, **params) -> dict:
    r = await client.get("/api/v1/files/stats/", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def _scanned_stats(client, headers) -> dict:
    """The same figures computed another way: a date filter that matches everything sends stats
    through the month and day counters instead of the account's (tests/test_timeline.py compares
    both with an aggregation over the files)."""
    return await _stats(client, headers, date_gte="2000-01-01")


def _buckets(body: dict) -> dict:
    return {name: body[name] for name in BUCKETS}


async def test_counters_follow_uploads_dedup_and_deletes(client, alice):
    voice = wav()
    contents = [(GIF, "a.gif"), (WEBM + os.urandom(50), "v.webm"), (voice, "voice.wav"), (opaque(300), "x.bin")]
    ids = []
    for content, name in contents:
        extra = {"context": "voice"} if name == "voice.wav" else {}  # voices are files sent as voice messages
        r = await upload(client, alice, content, name, **extra)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    body = await _stats(client, alice)
    assert body["images"] == {"count": 1, "used": len(GIF)}
    assert body["videos"] == {"count": 1, "used": len(WEBM) + 50}
    assert body["voices"] == {"count": 1, "used": len(voice)}
    assert body["files"] == {"count": 1, "used": 300}
    assert body["avatars"] == {"count": 0, "used": 0}
    total = len(GIF) + len(WEBM) + 50 + len(voice) + 300
    assert body["total"] == {"count": 4, "used": total}
    assert body["used"] == total
    assert _buckets(body) == _buckets(await _scanned_stats(client, alice))

    # slot dedup makes a file without an upload: it counts too
    r = await client.get("/api/v1/files/slot/", headers=alice, params={"hash": sha256(GIF), "size": len(GIF), "name": "b.gif"})
    assert r.status_code == 200 and "id" in r.json(), r.text
    body = await _stats(client, alice)
    assert body["images"] == {"count": 2, "used": 2 * len(GIF)}
    assert body["total"] == {"count": 5, "used": total + len(GIF)}

    # deletes: by id, then by filter
    r = await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": ids[3]})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    r = await client.request("DELETE", "/api/v1/files/", headers=alice, params={"media_type": "image"})
    assert r.status_code == 200 and r.json()["deleted"] == 2
    body = await _stats(client, alice)
    assert body["images"] == {"count": 0, "used": 0}
    assert body["files"] == {"count": 0, "used": 0}
    assert body["total"] == {"count": 2, "used": len(WEBM) + 50 + len(voice)}
    assert body["used"] == body["total"]["used"]
    assert _buckets(body) == _buckets(await _scanned_stats(client, alice))
    # a delete that matches nothing changes nothing
    r = await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": "999999999"})
    assert r.status_code == 404
    assert _buckets(await _stats(client, alice)) == _buckets(body)


async def test_counters_are_per_owner_and_list_totals_use_them(client, alice, bob):
    for i in range(3):
        assert (await upload(client, alice, opaque(100 + i), f"a{i}.bin")).status_code == 201
    assert (await upload(client, bob, opaque(7), "b.bin")).status_code == 201
    assert (await _stats(client, alice))["total"] == {"count": 3, "used": 303}
    assert (await _stats(client, bob))["total"] == {"count": 1, "used": 7}
    listing = (await client.get("/api/v1/files/", headers=alice)).json()
    assert listing["total_objects"] == 3 and listing["total_pages"] == 1 and len(listing["items"]) == 3
    filtered = (await client.get("/api/v1/files/", headers=alice, params={"size_gte": 101})).json()
    assert filtered["total_objects"] == 2


async def test_fsck_recomputes_counters(client, alice, service):
    for i in range(2):
        assert (await upload(client, alice, opaque(10 + i), f"f{i}.bin")).status_code == 201
    assert (await upload(client, alice, GIF, "g.gif")).status_code == 201
    right = _buckets(await _stats(client, alice))
    ctx = service.parts
    counters = ctx.db.db["file_counts"]
    # what a crash between a file's insert and its counter update (or a bug) could leave
    await counters.update_one({"_id": "alice@example.org"}, {"$inc": {"files.count": 5, "images.used": -3}})
    await counters.insert_one({"_id": "ghost@example.org", "files": {"count": 2, "used": 9}})
    assert _buckets(await _stats(client, alice)) != right
    report = await fsck(ctx)
    assert report.counts_fixed == 2
    assert _buckets(await _stats(client, alice)) == right
    ghost = await login(service, "ghost@example.org")
    assert (await _stats(client, ghost))["total"] == {"count": 0, "used": 0}
    again = await fsck(ctx)
    assert again.counts_fixed == 0


async def test_newest_first_pages_through_the_counters(client, alice, service):
    """Files spread from minutes to years back, some sharing a timestamp: every page, with and
    without date filters, is exactly the slice of the full newest-first order."""
    ids = []
    for i in range(23):
        r = await upload(client, alice, opaque(20 + i), f"n{i}.bin")
        assert r.status_code == 201
        ids.append(r.json()["id"])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ages = [dt.timedelta(minutes=5), dt.timedelta(hours=30), dt.timedelta(days=3), dt.timedelta(days=40), dt.timedelta(days=900)]
    files = service.parts.db.files
    for i, file_id in enumerate(ids):
        age = ages[i % len(ages)] + dt.timedelta(seconds=(i // len(ages)) * 7 if i % 4 else 0)
        await files.update_one({"_id": file_id}, {"$set": {"created_at": now - age}})
    await service.parts.files.recount("alice@example.org")  # dates written past the counters
    docs = await files.find({"owner": "alice@example.org"}).to_list()
    expected = [d["_id"] for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True)]

    async def pages(**params) -> list[int]:
        seen: list[int] = []
        number = 1
        while True:
            r = await client.get("/api/v1/files/", headers=alice, params={"obj_per_page": 4, "page": number, **params})
            assert r.status_code == 200, r.text
            body = r.json()
            if not body["items"]:
                return seen
            seen += [item["id"] for item in body["items"]]
            number += 1

    assert await pages() == expected
    gte, lte = now - dt.timedelta(days=50), now - dt.timedelta(hours=1)
    window = [
        d["_id"] for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True) if gte <= d["created_at"] <= lte
    ]
    assert window and len(window) < len(expected)
    assert await pages(date_gte=gte.isoformat(), date_lte=lte.isoformat()) == window
    past_end = (await client.get("/api/v1/files/", headers=alice, params={"obj_per_page": 4, "page": 7})).json()
    assert past_end["items"] == [] and past_end["total_objects"] == 23 and past_end["total_pages"] == 6
