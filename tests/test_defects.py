"""Defects found by trying the API as a hostile client would, each on every route it could reach."""

from __future__ import annotations

import re

import pytest
from tornado.web import RequestHandler

from handlers import ROUTES
from tests.helpers import assert_error, login, multipart

DEPTH = 50_000
JSON_ROUTES = [
    ("POST", "/api/v1/account/xmpp_code_request/"),
    ("POST", "/api/v1/account/xmpp_auth/"),
    ("DELETE", "/api/v1/account/tokens/"),
    ("PUT", "/api/v1/account/quota/"),
    ("DELETE", "/api/v1/files/"),
    ("DELETE", "/api/v1/avatar/"),
    ("GET", "/api/v1/files/"),
    ("GET", "/api/v1/files/slot/"),
    ("GET", "/api/v1/files/stats/"),
    ("GET", "/api/v1/account/list/"),
]


@pytest.fixture
def settings(settings):
    settings.admins = ["admin@example.org"]
    return settings


@pytest.fixture
async def admin(service):
    return await login(service, "admin@example.org")


@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_deeply_nested_json_is_a_400(client, admin, opener):
    body = opener * DEPTH
    for method, path in JSON_ROUTES:
        headers = {**admin, "Content-Type": "application/json"}
        r = await client.request(method, path, headers=headers, content=body.encode())
        assert_error(r, 400)
    # account deletion by jid + code reads its body (with a token it deletes the caller's account)
    r = await client.request("DELETE", "/api/v1/account/", headers={"Content-Type": "application/json"}, content=body.encode())
    assert_error(r, 400)


async def test_chunked_upload_past_the_limit_is_a_413(client, alice, service):
    service.settings.limits.max_file_size = 100_000
    headers, body = multipart([("file", "big.bin", b"a" * 300_000)])

    async def chunks():
        for i in range(0, len(body), 7777):
            yield body[i : i + 7777]

    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=chunks())
    assert_error(r, 413)
    listed = (await client.get("/api/v1/files/", headers=alice)).json()
    assert listed["total_objects"] == 0


@pytest.mark.parametrize("value", [[1000], {"v": 1000}, True, 1.5, "1e3"])
async def test_quota_value_must_be_an_integer(client, admin, value):
    r = await client.put("/api/v1/account/quota/", headers=admin, json={"value": value})
    body = assert_error(r, 400)
    assert "value" in body["fields"]


async def test_integer_parameters_refuse_lists_everywhere(client, alice):
    for path, name in (("/api/v1/files/", "page"), ("/api/v1/files/", "obj_per_page"), ("/api/v1/files/slot/", "size")):
        r = await client.request("GET", path, headers=alice, json={"hash": "0" * 32, name: [5]})
        assert_error(r, 400)


async def test_unsupported_methods_are_405_on_every_route(client, alice):
    methods = ("GET", "POST", "PUT", "DELETE")
    for pattern, handler in ROUTES:
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "x", pattern)  # a named group: any value it matches
        path = path.replace("/?", "/").replace("\\.", ".").replace("([^/]+)", "x")
        for method in methods:
            if getattr(handler, method.lower()) is not getattr(RequestHandler, method.lower()):
                continue
            r = await client.request(method, path, headers=alice)
            assert_error(r, 405)


async def test_browser_style_backslash_names_keep_the_last_part(client, alice):
    # the HTML standard leaves backslashes in filename="…" as they are
    headers, body = multipart([("file", "C:\\Users\\me\\doc.txt", b"hello")])
    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=body)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "doc.txt"
    # a quoted quote stays a quote
    headers, body = multipart([("file", 'say \\"hi\\".txt', b"hello")])
    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=body)
    assert r.json()["name"] == 'say "hi".txt'


async def test_dates_past_the_calendar_once_in_utc_are_a_400(client, alice):
    """Regression: an offset that moves a date past year 1 or 9999 in UTC was an OverflowError (500)."""
    for path in ("/api/v1/files/", "/api/v1/files/stats/"):
        for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
            body = assert_error(await client.get(path, headers=alice, params={"date_gte": value}), 400)
            assert "date_gte" in body["fields"]
        # the calendar's own ends are dates like any other
        for name, value in (("date_lte", "9999-12-31"), ("date_gte", "0001-01-01"), ("date_lte", "9999-12-31T23:59:59")):
            assert (await client.get(path, headers=alice, params={name: value})).status_code == 200


async def test_an_upload_whose_client_left_holds_its_place_until_it_is_committed(make_service):
    """Regression: a client gone after its whole body arrived gave its upload's lease back at
    once, while the file was still being committed (thumbnails): the owner's next upload was
    admitted past `limits.concurrent_uploads_per_user`, and a shutdown's drain did not wait."""
    import asyncio
    import io
    import socket
    from urllib.parse import urlsplit

    import httpx
    from PIL import Image

    from tests.helpers import opaque

    service = await make_service(limits={"concurrent_uploads_per_user": 1})
    headers = await login(service, "leaver@example.org")
    picture = io.BytesIO()
    Image.frombytes("RGB", (4000, 4000), opaque(4000 * 4000 * 3)).save(picture, "PNG", compress_level=0)
    form, body = multipart([("file", "noise.png", picture.getvalue())])
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, **form, "Content-Length": str(len(body))}.items())
    parts = urlsplit(service.url)
    sock = socket.create_connection((parts.hostname, parts.port))
    request = f"POST /api/v1/files/upload/ HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}\r\n".encode() + body
    await asyncio.to_thread(sock.sendall, request)
    sock.close()  # at once: the answer comes after the thumbnails
    owner = "leaver@example.org"
    for _ in range(500):  # the file is charged at the start of its commit, before its thumbnails
        if (await service.parts.users.quota(owner)).used:
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        second = await client.post("/api/v1/files/upload/", headers=headers, files={"file": ("b.bin", b"x" * 10)})
        assert_error(second, 429)  # the first one is still being committed
        for _ in range(300):
            listed = (await client.get("/api/v1/files/", headers=headers)).json()
            if listed["total_objects"]:
                break
            await asyncio.sleep(0.05)
        assert [item["name"] for item in listed["items"]] == ["noise.png"]
        await asyncio.sleep(0.3)  # its lease is given back after the answer
        third = await client.post("/api/v1/files/upload/", headers=headers, files={"file": ("c.bin", b"x" * 10)})
        assert third.status_code == 201, third.text
