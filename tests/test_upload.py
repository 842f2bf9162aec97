"""POST files/upload/: streaming multipart, hashing, sniffing, names, limits, quota."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.helpers import assert_error, login, md5, multipart, opaque, sha256, staging, upload

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")  # header is enough to sniff


async def test_upload_returns_file_object_and_stores_content(client, alice, service):
    data = opaque(300_000)
    r = await upload(client, alice, data, "photo.bin", context="file", metadata='{"k": "v"}')
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["size"] == len(data)
    assert body["hash"] == md5(data)
    assert body["sha256"] == sha256(data)
    assert body["name"] == "photo.bin"
    assert body["media_type"] == "application/octet-stream"
    assert body["context"] == "file"
    assert body["metadata"] == {"k": "v"}
    assert body["thumbnail"] is None
    assert len(body["slot_id"]) >= 16
    assert body["file"] == f"{service.url}/media/{body['slot_id']}/photo.bin"
    assert body["created_at"].endswith("Z")
    assert body["used"] == len(data) and body["quota"] == service.settings.quota.default
    got = await client.get(body["file"])
    assert got.status_code == 200 and got.content == data
    assert staging(service.parts.store) == []


async def test_media_type_is_sniffed_not_declared(client, alice):
    r = await upload(client, alice, PNG + os.urandom(100), "x.txt", part_type="text/plain")
    assert r.json()["media_type"] == "image/png"
    r = await upload(client, alice, b"<html><body>hi</body></html>", "x.jpg", media_type="image/jpeg")
    assert r.json()["media_type"] == "text/html"
    # nothing detected: the declared type is used if well-formed
    r = await upload(client, alice, opaque(1000), "x", media_type="application/x-custom")
    assert r.json()["media_type"] == "application/x-custom"
    r = await upload(client, alice, opaque(1000), "x", media_type="not a type")
    assert r.json()["media_type"] == "application/octet-stream"
    # no media_type field: the part's Content-Type counts as the declaration
    r = await upload(client, alice, opaque(1000), "x", part_type="audio/x-thing")
    assert r.json()["media_type"] == "audio/x-thing"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        # backslashes arrive as quoted-pairs inside the quoted filename
        ("C:\\\\Users\\\\me\\\\Photo.JPG", "Photo.JPG"),
        ("a\x00b\x1fc\u202e.txt", "abc.txt"),
        ("", "file"),
        ("..", "file"),
        ("é" * 200, "é" * 127),
    ],
)
async def test_names_are_sanitised(client, alice, given, stored):
    headers, body = multipart([("file", given, b"hello")])
    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=body)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == stored
    assert len(r.json()["name"].encode()) <= 255


async def test_declared_size_must_match(client, alice, service):
    r = await upload(client, alice, b"12345", "a", size=6)
    assert_error(r, 400)
    r = await upload(client, alice, b"12345", "a", size=5)
    assert r.status_code == 201
    r = await upload(client, alice, b"12345", "a", size=service.settings.limits.max_file_size + 1)
    assert_error(r, 413)


async def test_bad_requests(client, alice):
    url = "/api/v1/files/upload/"
    assert_error(await client.post(url, headers=alice, content=b"raw", params={}), 415)
    assert_error(await client.post(url, headers=alice, json={"file": "x"}), 415)
    # multipart without a file part
    assert_error(await client.post(url, headers=alice, files={"other": ("a", b"x")}), 400)
    # no boundary
    assert_error(await client.post(url, headers={**alice, "Content-Type": "multipart/form-data"}, content=b"x"), 400)
    # two file parts
    r = await client.post(url, headers=alice, files=[("file", ("a", b"1")), ("file", ("b", b"2"))])
    assert_error(r, 400)
    for bad in (
        {"metadata": "[1]"},
        {"metadata": "{"},
        {"metadata": "x" * 9000},
        {"context": "c" * 65},
        {"create_thumbnails": "maybe"},
    ):
        assert_error(await upload(client, alice, b"x", "a", **bad), 400)
    assert_error(await client.post(url, files={"file": ("a", b"x")}), 401)
    r = await client.post(url, headers={"Authorization": "Bearer nope"}, files={"file": ("a", b"x")})
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_too_large_rejected_early_and_midstream(client, alice, service):
    service.settings.limits.max_file_size = 100_000
    r = await upload(client, alice, os.urandom(200_000), "big")
    assert_error(r, 413)

    # a chunked body (no Content-Length) is cut off once the bytes pass the limit
    async def body():
        for _ in range(50):
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n' if _ == 0 else os.urandom(10_000)

    try:
        r = await client.post(
            "/api/v1/files/upload/", headers={**alice, "Content-Type": "multipart/form-data; boundary=b"}, content=body()
        )
        assert_error(r, 413)
    except httpx.HTTPError:
        pass  # the server may close the connection before the client finished sending
    await asyncio.sleep(0.2)
    assert staging(service.parts.store) == []
    quota = (await client.get("/api/v1/account/quota/", headers=alice)).json()
    assert quota["used"] == 0


async def test_quota_is_enforced(client, service):
    headers = await login(service, "small@example.org")
    await service.parts.db.users.update_one({"_id": "small@example.org"}, {"$set": {"quota": 1000}})
    assert (await upload(client, headers, os.urandom(600), "a")).status_code == 201
    assert_error(await upload(client, headers, os.urandom(600), "b"), 403)
    quota = (await client.get("/api/v1/account/quota", headers=headers)).json()
    assert quota == {"quota": 1000, "used": 600, "available": 400}


async def test_concurrent_uploads_never_exceed_quota(client, service):
    """30 uploads race for room for 10: the atomic commit lets exactly 10 through."""
    headers = await login(service, "racer@example.org")
    await service.parts.db.users.update_one({"_id": "racer@example.org"}, {"$set": {"quota": 100_000}})
    results = await asyncio.gather(*(upload(client, headers, os.urandom(10_000), f"f{i}") for i in range(30)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 10 and codes.count(403) == 20, codes
    quota = (await client.get("/api/v1/account/quota", headers=headers)).json()
    assert quota["used"] == 100_000
    listed = (await client.get("/api/v1/files", headers=headers)).json()
    assert listed["total_objects"] == 10


async def test_upload_rate_limit(client, alice, service):
    service.settings.limits.uploads_per_window = 3
    service.settings.limits.upload_window = 60
    codes = [(await upload(client, alice, b"x", "a")).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    r = await upload(client, alice, b"x", "a")
    assert_error(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 60


async def test_dedup_across_users_is_invisible(client, alice, bob, service):
    data = os.urandom(5000)
    a = (await upload(client, alice, data, "a.bin")).json()
    b = (await upload(client, bob, data, "b.bin")).json()
    assert a["slot_id"] != b["slot_id"] and a["id"] != b["id"]
    assert await service.parts.store.contents() == {a["sha256"]}  # stored once
    # deleting one owner's link keeps the other's content
    r = await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": a["id"]})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert (await client.get(b["file"])).content == data
    assert (await client.get(a["file"])).status_code == 404


async def test_answers_are_the_bytes_json_dumps_writes(client, alice):
    """JSON answers go out by orjson, byte for byte what json.dumps(ensure_ascii=False, compact)
    writes: non-ASCII as UTF-8, and a file's metadata with floats (1e-07 among them, which
    orjson would write as 1e-7) through json.dumps, upload and listing alike."""
    import json

    from handlers.base import to_json

    metadata = '{"caption": "Grüße 漢字 \\u2028 \\"q\\"", "n": 2, "big": 9223372036854775807}'
    r = await upload(client, alice, opaque(2000), "süß.bin", metadata=metadata)
    assert r.status_code == 201, r.text
    assert r.content == json.dumps(json.loads(r.content), ensure_ascii=False, separators=(",", ":")).encode()
    assert "Grüße 漢字".encode() in r.content and b'"big":9223372036854775807' in r.content
    floats = '{"x": -0.0, "y": 1e-07, "z": [1e+16, 0.5]}'
    r = await upload(client, alice, opaque(2100), "f.bin", metadata=floats)
    assert r.status_code == 201, r.text
    assert b'"metadata":{"x":-0.0,"y":1e-07,"z":[1e+16,0.5]}' in r.content
    listing = await client.get("/api/v1/files/", headers=alice)
    assert listing.status_code == 200
    assert b'"metadata":{"x":-0.0,"y":1e-07,"z":[1e+16,0.5]}' in listing.content
    assert "süß.bin".encode() in listing.content
    for body in (
        {"a": [1, None, True, "é\x00\ud7ff"], "b": {"c": -(2**63), "d": 2**64}},
        [{"metadata": {"v": 1e16}}],
        {1: "int key"},
    ):
        assert to_json(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def test_metadata_with_an_integer_beyond_64_bits_is_refused(client, alice):
    """The database stores integers of at most 64 bits: a wider one in the metadata is a 400
    with the contract's body (it was a 500 when the insert failed)."""
    for wide in ("18446744073709551616", "-9223372036854775809"):
        r = await upload(client, alice, opaque(2200), "w.bin", metadata='{"n": ' + wide + "}")
        body = assert_error(r, 400)
        assert body["fields"] == {"metadata": "expected a JSON object ≤ 8 KiB"}
    r = await upload(client, alice, opaque(2300), "w.bin", metadata='{"n": -9223372036854775808}')
    assert r.status_code == 201 and r.json()["metadata"] == {"n": -(2**63)}


async def test_metadata_the_database_or_the_clients_cannot_take_is_refused(client, alice):
    """Regression: a lone surrogate or a NUL in a key (which BSON cannot encode) was a 500, and
    failed every upload committed in the same group; NaN and the infinities were stored and
    written back, which no JSON parser of the clients reads; nesting past MongoDB's limit."""
    deep = '{"a": ' * 40 + "1" + "}" * 40
    for bad in ('{"a": "\\ud800"}', '{"a\\u0000b": 1}', '{"x": NaN}', '{"y": [Infinity]}', '{"z": -Infinity}', deep):
        body = assert_error(await upload(client, alice, opaque(2400), "m.bin", metadata=bad), 400)
        assert body["fields"] == {"metadata": "expected a JSON object ≤ 8 KiB"}, bad
    r = await upload(client, alice, opaque(2500), "m.bin", metadata='{"a": "\\ud83d\\ude00", "k\\u0001": [1.5]}')
    assert r.status_code == 201 and r.json()["metadata"] == {"a": "\U0001f600", "k\x01": [1.5]}


async def test_metadata_with_dollar_ref_and_id_lists_as_given(client, alice):
    """Review: `{"$ref": <text>, "$id": …}` (at any level) is stored as given, but PyMongo
    decodes such a sub-document as a bson DBRef: the file's metadata in the listing (and in the
    slot-dedup copy) is then a DBRef, which neither orjson nor json.dumps can write: a 500 on
    every listing page that holds the file."""
    meta = '{"link": {"$ref": "chats", "$id": 7}, "duration": "3"}'
    r = await upload(client, alice, opaque(2600), "r.bin", metadata=meta)
    assert r.status_code in (201, 400), r.text
    if r.status_code == 201:
        listing = await client.get("/api/v1/files/", headers=alice)
        assert listing.status_code == 200, listing.text
        assert listing.json()["items"][0]["metadata"] == {"link": {"$ref": "chats", "$id": 7}, "duration": "3"}


async def test_legal_metadata_keys_are_kept(client, alice):
    """Keys with dots, "$", empty keys, emoji and astral characters are legal JSON the database
    stores: 201, and listed back as given."""
    meta = {"a.b": 1, "$x": {"$set": 2}, "": "empty", "😀": "𝄞 ok", "video_preview_key": "k", "meters": "1,2"}
    import json

    r = await upload(client, alice, opaque(2700), "k.bin", metadata=json.dumps(meta))
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == meta
    listing = await client.get("/api/v1/files/", headers=alice)
    assert listing.status_code == 200 and listing.json()["items"][0]["metadata"] == meta


async def test_a_float_beyond_double_range_is_refused_like_infinity(client, alice):
    """Review: `1e400` is valid JSON that Python's json reads as inf (parse_constant only sees
    the words NaN/Infinity): it is stored and written back as `Infinity`, which no client's JSON
    parser reads: the whole listing page becomes unparsable."""
    for bad in ('{"duration": 1e400}', '{"d": [-1e999]}'):
        body = assert_error(await upload(client, alice, opaque(2800), "f.bin", metadata=bad), 400)
        assert body["fields"] == {"metadata": "expected a JSON object ≤ 8 KiB"}, bad
    import json

    listing = await client.get("/api/v1/files/", headers=alice)
    json.loads(listing.content, parse_constant=lambda name: pytest.fail(f"{name} in a JSON answer"))
