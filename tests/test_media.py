"""GET|HEAD /media/<slot_id>/<name>: headers, conditional and range requests, safety."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from tests.helpers import assert_error, opaque, sha256, upload

PNG_HEAD = bytes.fromhex("89504e470d0a1a0a0000000d49484452")


@pytest.fixture
async def stored(client, alice):
    data = opaque(100_000)
    return data, (await upload(client, alice, data, "data file.bin")).json()


async def test_headers(client, stored):
    data, f = stored
    r = await client.get(f["file"])
    assert r.status_code == 200 and r.content == data
    h = r.headers
    assert h["Content-Length"] == str(len(data))
    assert h["Content-Type"] == "application/octet-stream"
    assert h["ETag"] == f'"{sha256(data)}"'
    assert h["Last-Modified"].endswith("GMT")
    assert h["Cache-Control"] == "public, max-age=31536000, immutable"
    assert h["Accept-Ranges"] == "bytes"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Content-Security-Policy"] == "default-src 'none'; sandbox; frame-ancestors 'none'"
    assert h["Access-Control-Allow-Origin"] == "*"
    assert h["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''data%20file.bin" in h["Content-Disposition"]
    head = await client.head(f["file"])
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(len(data))


async def test_same_content_same_etag(client, alice, bob):
    data = os.urandom(1000)
    a = (await upload(client, alice, data, "a")).json()
    b = (await upload(client, bob, data, "b")).json()
    assert (await client.get(a["file"])).headers["ETag"] == (await client.get(b["file"])).headers["ETag"]


@pytest.mark.parametrize(
    ("content", "name", "kind"),
    [
        (b"<html><script>alert(1)</script></html>", "x.html", "attachment"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.svg", "attachment"),
        (b'<?xml version="1.0"?><root/>', "x.xml", "attachment"),
        (b"just some words here\n", "x.txt", "inline"),
        (PNG_HEAD + os.urandom(64), "x.png", "inline"),
    ],
)
async def test_inline_only_for_safe_types(client, alice, content, name, kind):
    f = (await upload(client, alice, content, name)).json()
    r = await client.get(f["file"])
    assert r.headers["Content-Disposition"].split(";")[0] == kind
    assert r.headers["Content-Type"] == f["media_type"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_unicode_name_link(client, alice):
    f = (await upload(client, alice, b"hello", "фото 1.txt")).json()
    assert f["file"].endswith(quote("фото 1.txt", safe=""))
    r = await client.get(f["file"])
    assert r.status_code == 200 and r.content == b"hello"
    assert "filename*=UTF-8''%D1%84%D0%BE%D1%82%D0%BE%201.txt" in r.headers["Content-Disposition"]


async def test_not_found(client, stored, service):
    _, f = stored
    assert_error(await client.get(f"{service.url}/media/{f['slot_id']}/other.bin"), 404)
    assert_error(await client.get(f"{service.url}/media/nope/data%20file.bin"), 404)
    assert_error(await client.get(f"{service.url}/media/{f['slot_id']}/thumb_data%20file.bin"), 404)
    assert (await client.head(f"{service.url}/media/nope/x")).status_code == 404


async def test_conditional(client, stored):
    _, f = stored
    first = await client.get(f["file"])
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    r = await client.get(f["file"], headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    assert (await client.get(f["file"], headers={"If-None-Match": f'"other", {etag}'})).status_code == 304
    assert (await client.get(f["file"], headers={"If-None-Match": "*"})).status_code == 304
    assert (await client.get(f["file"], headers={"If-None-Match": '"other"'})).status_code == 200
    assert (await client.get(f["file"], headers={"If-Modified-Since": modified})).status_code == 304
    assert (await client.get(f["file"], headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})).status_code == 200
    assert (await client.get(f["file"], headers={"If-Modified-Since": "garbage"})).status_code == 200
    # If-None-Match wins over If-Modified-Since
    r = await client.get(f["file"], headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert r.status_code == 200


async def test_ranges(client, stored):
    data, f = stored
    size = len(data)

    async def get(range_header, **extra):
        return await client.get(f["file"], headers={"Range": range_header, **extra})

    r = await get("bytes=0-99")
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["Content-Range"] == f"bytes 0-99/{size}" and r.headers["Content-Length"] == "100"
    r = await get("bytes=99000-")
    assert r.status_code == 206 and r.content == data[99000:]
    r = await get("bytes=-500")
    assert r.status_code == 206 and r.content == data[-500:]
    r = await get("bytes=-999999999")
    assert r.status_code == 206 and r.content == data
    r = await get(f"bytes=5-{size * 2}")
    assert r.status_code == 206 and r.content == data[5:]
    for unsatisfiable in (f"bytes={size}-", "bytes=-0", f"bytes={size + 10}-{size + 20}"):
        r = await get(unsatisfiable)
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    for ignored in ("bytes=10-5", "items=0-5", "bytes=abc", "bytes=0-1,5-6"):
        r = await get(ignored)
        assert r.status_code == 200 and r.content == data
    etag = r.headers["ETag"]
    r = await get("bytes=0-9", **{"If-Range": etag})
    assert r.status_code == 206 and r.content == data[:10]
    r = await get("bytes=0-9", **{"If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    r = await get("bytes=0-9", **{"If-Range": r.headers["Last-Modified"]})
    assert r.status_code == 206
    head = await client.head(f["file"], headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["Content-Length"] == "10" and head.content == b""


async def test_empty_file(client, alice):
    f = (await upload(client, alice, b"", "empty")).json()
    r = await client.get(f["file"])
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    assert (await client.get(f["file"], headers={"Range": "bytes=0-"})).status_code == 416


async def test_cors_preflight(client, stored):
    _, f = stored
    r = await client.options(f["file"], headers={"Origin": "https://web.example", "Access-Control-Request-Headers": "range"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in r.headers["Access-Control-Allow-Headers"]


async def test_large_download_streams(client, alice, service):
    data = os.urandom(12 * 1024 * 1024 + 7)
    f = (await upload(client, alice, data, "big.bin")).json()
    received = bytearray()
    async with client.stream("GET", f["file"]) as r:
        async for chunk in r.aiter_bytes():
            received += chunk
    assert bytes(received) == data


async def test_x_accel_redirect(client, stored, service):
    data, f = stored
    service.settings.server.x_accel_redirect = "/_store"
    r = await client.get(f["file"])
    sha = f["sha256"]
    if service.settings.storage.backend == "gridfs":  # nothing nginx could read: the service streams
        assert "X-Accel-Redirect" not in r.headers
        assert r.status_code == 200 and r.content == data
        return
    assert r.status_code == 200 and r.content == b""
    # About the local store's layout: the path below storage.path that the proxy's internal
    # location serves (docs/deployment.md), content fanned out by its sha256.
    assert r.headers["X-Accel-Redirect"] == f"/_store/blobs/{sha[:2]}/{sha[2:4]}/{sha}"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
