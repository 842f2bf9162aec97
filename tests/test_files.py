"""files/slot/, GET files/, DELETE files/, files/stats/, account/quota/."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest

from tests.helpers import GIF, assert_error, login, md5, opaque, sha256, stored, upload, wav
from tests.helpers import WEBM as WEBM_HEADER

OGG = wav()  # a voice message
WEBM = WEBM_HEADER + os.urandom(100)


async def test_slot_dedups_within_the_callers_files_only(client, alice, bob):
    data = opaque(4096)
    first = (await upload(client, alice, data, "one.bin")).json()
    for digest in (md5(data), sha256(data), sha256(data).upper()):
        r = await client.get("/api/v1/files/slot/", headers=alice, params={"hash": digest, "size": len(data), "name": "two.bin"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["name"] == "two.bin" and body["sha256"] == sha256(data)
        assert body["slot_id"] != first["slot_id"] and body["id"] != first["id"]
        assert body["used"] == len(data) * 2 and "quota" in body
        assert (await client.get(body["file"])).content == data
        await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": body["id"]})
    # same hash, other size: no match
    r = await client.get("/api/v1/files/slot", headers=alice, params={"hash": md5(data), "size": len(data) + 1})
    assert set(r.json()) == {"quota", "used"}
    # bob has no such file: he must upload (whether alice has it is never revealed)
    r = await client.get("/api/v1/files/slot", headers=bob, params={"hash": sha256(data), "size": len(data)})
    assert r.status_code == 200 and set(r.json()) == {"quota", "used"}
    # a JSON body works as well as the query string
    r = await client.request(
        "GET", "/api/v1/files/slot/", headers=alice, json={"hash": md5(data), "size": len(data), "name": "j"}
    )
    assert r.status_code == 200 and r.json()["name"] == "j"


async def test_slot_errors(client, alice, service):
    url = "/api/v1/files/slot/"
    good = {"hash": "0" * 32, "size": 10}
    assert_error(await client.get(url, params=good), 401)
    for bad in (
        {"size": 10},
        {"hash": "xyz", "size": 10},
        {"hash": "0" * 48, "size": 1},
        {"hash": "0" * 32},
        {"hash": "0" * 32, "size": -1},
        {"hash": "0" * 32, "size": "ten"},
    ):
        body = assert_error(await client.get(url, headers=alice, params=bad), 400)
        assert body.get("fields")
    max_size = service.settings.limits.max_file_size
    assert_error(await client.get(url, headers=alice, params={**good, "size": max_size + 1}), 413)
    await service.parts.db.users.update_one({"_id": "alice@example.org"}, {"$set": {"quota": 5}})
    assert_error(await client.get(url, headers=alice, params=good), 403)


async def test_slot_respects_quota_for_dedup(client, service):
    headers = await login(service, "q@example.org")
    await service.parts.db.users.update_one({"_id": "q@example.org"}, {"$set": {"quota": 1500}})
    data = opaque(1000)
    await upload(client, headers, data)
    r = await client.get("/api/v1/files/slot/", headers=headers, params={"hash": md5(data), "size": 1000})
    assert_error(r, 403)


async def _populate(client, headers):
    made = []
    for i, (content, name, context) in enumerate(
        [
            (GIF, "a.gif", "file"),
            (OGG, "v.wav", "voice"),
            (WEBM, "m.webm", "file"),
            (b"x" * 50, "n.txt", None),
            (opaque(300), "r.bin", "file"),
        ]
    ):
        r = await upload(client, headers, content, name, **({"context": context} if context else {}))
        assert r.status_code == 201, r.text
        made.append(r.json())
        if i == 0:
            await asyncio.sleep(0.02)
    return made


async def test_list_filters_ordering_pagination(client, alice, bob):
    made = await _populate(client, alice)
    await upload(client, bob, b"bob's", "b.txt")
    r = await client.get("/api/v1/files/", headers=alice)
    body = r.json()
    assert body["total_objects"] == 5 and body["total_pages"] == 1 and body["page"] == 1 and body["obj_per_page"] == 50
    assert [i["id"] for i in body["items"]] == [m["id"] for m in reversed(made)]  # newest first
    types = {i["name"]: i["media_type"] for i in body["items"]}
    assert types["a.gif"] == "image/gif" and types["v.wav"].startswith("audio/") and types["m.webm"] == "video/webm"

    async def names(**params):
        r = await client.get("/api/v1/files", headers=alice, params=params)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["items"]]

    assert await names(media_type="image") == ["a.gif"]
    assert await names(media_type="image/gif") == ["a.gif"]
    assert await names(media_type="imag") == []
    assert await names(context="voice") == ["v.wav"]
    assert sorted(await names(id=f"{made[0]['id']},{made[1]['id']}")) == ["a.gif", "v.wav"]
    assert await names(id="not-an-id") == []
    assert await names(size_gte=300, size_lte=300) == ["r.bin"]
    assert await names(order_by="name") == ["a.gif", "m.webm", "n.txt", "r.bin", "v.wav"]
    by_size = [m["name"] for m in sorted(made, key=lambda m: (-m["size"], m["name"]))]
    assert await names(order_by="-size,name") == by_size
    today = dt.datetime.now(dt.UTC).date()
    assert len(await names(date_gte=today.isoformat(), date_lte=today.isoformat())) == 5
    assert await names(date_lte=(today - dt.timedelta(days=1)).isoformat()) == []
    assert len(await names(date_gte=f"{today}T00:00:00+05:00")) == 5
    page2 = (await client.get("/api/v1/files", headers=alice, params={"obj_per_page": 2, "page": 2, "order_by": "name"})).json()
    assert page2["total_pages"] == 3 and [i["name"] for i in page2["items"]] == ["n.txt", "r.bin"]
    past = (await client.get("/api/v1/files", headers=alice, params={"obj_per_page": 2, "page": 9})).json()
    assert past["items"] == [] and past["total_objects"] == 5


@pytest.mark.parametrize(
    "params",
    [
        {"obj_per_page": 0},
        {"obj_per_page": 501},
        {"obj_per_page": "x"},
        {"page": 0},
        {"page": "1.5"},
        {"order_by": "owner"},
        {"order_by": "-hash"},
        {"date_gte": "yesterday"},
        {"date_lte": "2026-13-40"},
        {"size_gte": "-1"},
        {"size_lte": "big"},
        {"size_gte": str(2**64)},  # regression: beyond 64 bits the database driver raised (500)
        {"page": str(2**70)},
    ],
)
async def test_list_bad_params(client, alice, params):
    body = assert_error(await client.get("/api/v1/files/", headers=alice, params=params), 400)
    assert list(body["fields"]) == list(params)


async def test_list_empty_account(client, service):
    headers = await login(service, "empty@example.org")
    body = (await client.get("/api/v1/files", headers=headers)).json()
    assert body == {"total_pages": 0, "total_objects": 0, "obj_per_page": 50, "page": 1, "items": []}


async def test_delete_by_criteria(client, alice, bob, service):
    made = await _populate(client, alice)
    bobs = (await upload(client, bob, GIF, "bob.gif")).json()
    url = "/api/v1/files/"
    assert_error(await client.request("DELETE", url, headers=alice), 400)
    assert_error(await client.request("DELETE", url, headers=alice, params={"id": ""}), 400)
    assert_error(await client.request("DELETE", url, headers=alice, params={"date_gte": "nope"}), 400)
    # another user's id, a malformed id: 404, and bob's file is untouched
    assert_error(await client.request("DELETE", url, headers=alice, params={"id": bobs["id"]}), 404)
    assert_error(await client.request("DELETE", url, headers=alice, params={"id": "zzz"}), 404)
    assert (await client.get(bobs["file"])).status_code == 200
    # by download URL
    r = await client.request("DELETE", url, headers=alice, json={"file": made[4]["file"]})
    assert r.json()["deleted"] == 1
    # by media type (form body)
    r = await client.request(
        "DELETE", url, headers={**alice, "Content-Type": "application/x-www-form-urlencoded"}, content="media_type=image"
    )
    assert r.status_code == 200 and r.json()["deleted"] == 1
    # a list of ids in JSON
    r = await client.request("DELETE", url, headers=alice, json={"id": [made[1]["id"], made[2]["id"], bobs["id"]]})
    assert r.json()["deleted"] == 2
    remaining = (await client.get(url, headers=alice)).json()
    assert [i["name"] for i in remaining["items"]] == ["n.txt"]
    assert r.json()["used"] == 50
    # bob's gif shares content with alice's deleted gif: still served
    assert (await client.get(bobs["file"])).content == GIF
    # alice's deleted content that nobody else has left the volume
    assert not await stored(service, sha256(OGG))
    assert await stored(service, sha256(GIF))
    assert (await service.parts.db.blobs.find_one({"_id": sha256(GIF)}))["refs"] == 1


async def test_stats(client, alice, service):
    await _populate(client, alice)
    r = await client.get("/api/v1/files/stats/", headers=alice)
    body = r.json()
    assert body["images"] == {"count": 1, "used": len(GIF)}
    assert body["voices"] == {"count": 1, "used": len(OGG)}
    assert body["videos"] == {"count": 1, "used": len(WEBM)}
    assert body["files"] == {"count": 2, "used": 350}
    assert body["avatars"] == {"count": 0, "used": 0}
    total = len(GIF) + len(OGG) + len(WEBM) + 350
    assert body["total"] == {"count": 5, "used": total}
    assert body["used"] == total and body["quota"] == service.settings.quota.default
    quota = (await client.get("/api/v1/account/quota/", headers=alice)).json()
    assert quota["used"] == body["used"]
    filtered = (await client.get("/api/v1/files/stats", headers=alice, params={"media_type": "image"})).json()
    assert filtered["total"] == {"count": 1, "used": len(GIF)} and filtered["used"] == total
    assert_error(await client.get("/api/v1/files/stats", headers=alice, params={"date_gte": "x"}), 400)
