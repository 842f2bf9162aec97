"""Prosody's own mod_http_file_share in external mode, pointed at gallery: a real Prosody issues
the slots and signs the tokens, slixmpp's XEP-0363 plugin uploads, gallery stores and serves."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import yaml
from PIL import Image
from slixmpp import JID

from handlers import prosody_share
from server import Service
from testbed.prosody import free_port
from tests.helpers import GIF, ROOT, assert_error, login, opaque, sha256, stored, upload, user_doc, wait_until
from tests.prosody import Prosody, XmppUser, configure_component
from tests.test_ops import _methods, _route_to_openapi

SECRET = "prosody-share-secret-for-tests"
SHARE = "share.localhost"  # Prosody's expiry off: gallery's retention alone decides
BRIEF = "brief.localhost"  # Prosody wants its files gone 2 s after the slot was issued

COMPONENTS = """
Component "{share}" "http_file_share"
    http_file_share_secret = "{secret}"
    http_file_share_base_url = "{base}"
    http_file_share_expires_after = -1
    http_file_share_size_limit = 10485760

Component "{brief}" "http_file_share"
    http_file_share_secret = "{secret}"
    http_file_share_base_url = "{base}"
    http_file_share_expires_after = 2
"""


@pytest.fixture(scope="module")
def share_prosody() -> Iterator[tuple[Prosody, int]]:
    """A Prosody of this module's own, with two http_file_share components whose base URL is
    the gallery under test: its port is chosen first, and every test's service listens on it."""
    if shutil.which("prosody") is None:
        pytest.fail("prosody is not installed: run bin/setup --dev")
    gallery_port = free_port()
    with tempfile.TemporaryDirectory(prefix="gallery-prosody-share-") as d:
        server = Prosody(Path(d))
        server.prepare()
        base = f"http://127.0.0.1:{gallery_port}/share"
        with open(server.config, "a") as config:
            config.write(COMPONENTS.format(share=SHARE, brief=BRIEF, secret=SECRET, base=base))
        server.start()
        try:
            yield server, gallery_port
        finally:
            server.stop()


@pytest.fixture
async def gallery(make_service, share_prosody) -> Service:
    """The service on the port Prosody's components point at, the share route on."""
    _, port = share_prosody
    return await make_service(server={"port": port}, prosody_share={"secret": SECRET}, retention={"sweep_interval": 0.2})


@pytest.fixture
async def http(gallery: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gallery.url, timeout=30) as c:
        yield c


@pytest.fixture
async def alice(share_prosody) -> AsyncIterator[XmppUser]:
    server, _ = share_prosody
    user = XmppUser(server, "alice")
    user.client.register_plugin("xep_0363")
    await user.connect()
    yield user
    await user.disconnect()


async def slot(user: XmppUser, name: str, size: int, content_type: str = "application/octet-stream", *, host: str = SHARE):
    """A slot from Prosody's http_file_share: (put URL, Authorization header value, get URL)."""
    iq = await user.client.plugin["xep_0363"].request_slot(JID(host), name, size, content_type, timeout=10)
    put = iq["http_upload_slot"]["put"]
    headers = {h["name"]: h["value"] for h in put["headers"]}
    assert list(headers) == ["Authorization"] and headers["Authorization"].startswith("Bearer ")
    return put["url"], headers["Authorization"], iq["http_upload_slot"]["get"]["url"]


def claims_of(authorization: str) -> dict[str, Any]:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def forge(claims: dict[str, Any], secret: str = SECRET) -> str:
    """A token signed as Prosody's util/jwt.lua signs (written here from RFC 7519, not taken from
    the service's code): base64url header and payload, HMAC-SHA256 over both."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return "Bearer " + signed + "." + b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())


async def test_slixmpp_uploads_through_prosody_into_the_users_gallery(gallery, http, alice):
    """slixmpp's own upload_file against Prosody's component: the PUT goes to gallery, which
    answers 201; the GET URL works; the file is alice's, listed, counted, in her quota."""
    data = GIF
    url = await alice.client.plugin["xep_0363"].upload_file(
        "tiny pic.gif", input_file=io.BytesIO(data), size=len(data), content_type="image/gif", domain=JID(SHARE), timeout=15
    )
    assert url.startswith(f"{gallery.url}/share/")
    r = await http.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "image/gif" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert (await http.head(url)).headers["Content-Length"] == str(len(data))
    headers = await login(gallery, "alice@localhost")
    listing = (await http.get("/api/v1/files/", headers=headers)).json()
    assert listing["total_objects"] == 1
    item = listing["items"][0]
    assert item["name"] == "tiny pic.gif" and item["context"] == "message" and item["sha256"] == sha256(data)
    assert item["slot_id"] == unquote(urlsplit(url).path).split("/")[2]
    assert item["expires_at"] is None  # Prosody's expiry is off and retention.message is 0
    assert item["thumbnail"] is not None  # the same pipeline as files/upload/
    assert (await http.get(item["file"])).content == data  # the ordinary /media/ link too
    quota = (await http.get("/api/v1/account/quota/", headers=headers)).json()
    assert quota["used"] == len(data)
    stats = (await http.get("/api/v1/files/stats/", headers=headers)).json()
    assert stats["images"] == {"count": 1, "used": len(data)}
    # a REST upload lands in the same listing and quota
    assert (await upload(http, headers, opaque(100), "rest.bin")).status_code == 201
    assert (await http.get("/api/v1/account/quota/", headers=headers)).json()["used"] == len(data) + 100
    # deletable like any file: the share URL then answers 404
    assert (await http.request("DELETE", "/api/v1/files/", headers=headers, params={"id": item["id"]})).status_code == 200
    assert_error(await http.get(url), 404)


def png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


async def test_files_from_all_three_doors_in_one_listing_quota_and_stats(make_service, share_prosody, settings):
    """One user uploads through every door at once: REST files/upload/, gallery's own XEP-0363
    component (slixmpp's upload_file on one device) and Prosody's http_file_share with its JWT
    (upload_file on another device, which finds share.localhost). All three files are theirs:
    listed by GET files/, their sizes summed in the quota, counted by type in the stats, each
    served; deleting one gives back exactly its size."""
    server, port = share_prosody
    configure_component(settings, server)
    gallery = await make_service(server={"port": port}, prosody_share={"secret": SECRET})
    assert gallery.parts is not None and gallery.parts.component is not None
    component = gallery.parts.component
    await wait_until(lambda: component.state == "connected", 10, "the component's session")
    jid = server.jid("alice")
    headers = await login(gallery, jid)
    rest_data, component_data, share_data = opaque(300), png(48), opaque(700)
    phone, laptop = XmppUser(server, "alice"), XmppUser(server, "alice")  # two devices of alice's
    for device in (phone, laptop):
        device.client.register_plugin("xep_0363")
        await device.connect()
    try:
        async with httpx.AsyncClient(base_url=gallery.url, timeout=30) as http:
            r = await upload(http, headers, rest_data, "rest.bin")
            assert r.status_code == 201, r.text
            component_url = await phone.client.plugin["xep_0363"].upload_file(
                "component.png",
                input_file=io.BytesIO(component_data),
                size=len(component_data),
                content_type="image/png",
                domain=JID(server.component_jid),
                timeout=15,
            )
            share_url = await laptop.client.plugin["xep_0363"].upload_file(
                "share.bin", input_file=io.BytesIO(share_data), size=len(share_data), domain=JID(SHARE), timeout=15
            )
            # each door's own URL: the component's GET is a /media/ link, Prosody's the share path
            assert urlsplit(component_url).path.startswith("/media/")
            assert urlsplit(share_url).path.startswith("/share/")
            assert (await http.get(component_url)).content == component_data
            assert (await http.get(share_url)).content == share_data

            listing = (await http.get("/api/v1/files/", headers=headers)).json()
            assert listing["total_objects"] == 3
            items = {item["name"]: item for item in listing["items"]}
            assert set(items) == {"rest.bin", "component.png", "share.bin"}
            for name, data in (("rest.bin", rest_data), ("component.png", component_data), ("share.bin", share_data)):
                assert items[name]["size"] == len(data) and items[name]["sha256"] == sha256(data)
                assert (await http.get(items[name]["file"])).content == data
            assert items["component.png"]["context"] == "message" and items["share.bin"]["context"] == "message"
            assert items["component.png"]["thumbnail"] is not None  # the same pipeline for every door

            total = len(rest_data) + len(component_data) + len(share_data)
            quota = (await http.get("/api/v1/account/quota/", headers=headers)).json()
            assert quota["used"] == total
            stats = (await http.get("/api/v1/files/stats/", headers=headers)).json()
            assert stats["total"] == {"count": 3, "used": total}
            assert stats["images"] == {"count": 1, "used": len(component_data)}
            assert stats["files"] == {"count": 2, "used": len(rest_data) + len(share_data)}
            assert stats["used"] == total

            # deleting the Prosody-door file gives back its size alone; its share URL is gone
            r = await http.delete("/api/v1/files/", params={"id": items["share.bin"]["id"]}, headers=headers)
            assert r.status_code == 200 and r.json()["used"] == total - len(share_data)
            assert_error(await http.get(share_url), 404)
            stats = (await http.get("/api/v1/files/stats/", headers=headers)).json()
            assert stats["total"] == {"count": 2, "used": total - len(share_data)}
    finally:
        for device in (phone, laptop):
            await device.disconnect()


async def test_put_answers_as_prosodys_own_handler(gallery, http, alice):
    data = opaque(3000)
    put, auth, get = await slot(alice, "report.bin", len(data))
    assert put == get
    claims = claims_of(auth)
    assert claims["sub"] == "alice@localhost" and claims["filesize"] == len(data) and "expires" not in claims
    # no token, a malformed header, a bad signature: 401 (the first with the Bearer challenge)
    r = await http.put(put, content=data)
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await http.put(put, content=data, headers={"Authorization": "Basic YWxpY2U6cHc="}), 401)
    assert_error(await http.put(put, content=data, headers={"Authorization": auth[:-3] + "AAA"}), 401)
    assert_error(await http.put(put, content=data, headers={"Authorization": forge(claims, "another secret")}), 401)
    assert_error(await http.put(put, content=data, headers={"Authorization": "Bearer not.a.jwt!"}), 401)
    # an expired token: 410; a token for another slot: 400
    expired = forge({**claims, "exp": int(time.time()) - 5})
    assert_error(await http.put(put, content=data, headers={"Authorization": expired}), 410)
    other_put, other_auth, _ = await slot(alice, "other.bin", len(data))
    assert_error(await http.put(put, content=data, headers={"Authorization": other_auth}), 400)
    # a length other than the slot's: 413, whether declared or only counted (chunked)
    assert_error(await http.put(put, content=data + b"x", headers={"Authorization": auth}), 413)
    assert_error(await http.put(put, content=data[:-1], headers={"Authorization": auth}), 413)

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        yield body

    assert_error(await http.put(put, content=chunks(data[:-10]), headers={"Authorization": auth}), 413)
    # none of that left anything behind; now the real upload, then the slot is spent: 409
    headers = await login(gallery, "alice@localhost")
    assert (await http.get("/api/v1/account/quota/", headers=headers)).json()["used"] == 0
    assert await gallery.parts.store.clean_staging(0) == 0  # no bytes left behind
    r = await http.put(put, content=data, headers={"Authorization": auth, "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert (await http.get(get)).content == data
    assert_error(await http.put(put, content=data, headers={"Authorization": auth}), 409)
    # the other slot still works, chunked too
    r = await http.put(other_put, content=chunks(data), headers={"Authorization": other_auth})
    assert r.status_code == 201, r.text
    assert (await http.get("/api/v1/account/quota/", headers=headers)).json()["used"] == 2 * len(data)
    # CORS preflight for web clients
    r = await http.options(put, headers={"Origin": "https://web.example", "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 204 and "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_hostile_puts(gallery, http, alice):
    data = opaque(200_000)
    put, auth, _ = await slot(alice, "target.bin", len(data))
    claims = claims_of(auth)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    # no algorithm, another algorithm, claims changed under Prosody's signature: 401
    unsigned = "Bearer " + b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims).encode()) + "."
    assert_error(await http.put(put, content=data, headers={"Authorization": unsigned}), 401)
    signed = b64(b'{"alg":"HS512","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    hs512 = "Bearer " + signed + "." + b64(hmac.new(SECRET.encode(), signed.encode(), hashlib.sha512).digest())
    assert_error(await http.put(put, content=data, headers={"Authorization": hs512}), 401)
    header, _, signature = auth.removeprefix("Bearer ").split(".")
    stolen = f"Bearer {header}.{b64(json.dumps({**claims, 'sub': 'bob@localhost'}).encode())}.{signature}"
    assert_error(await http.put(put, content=data, headers={"Authorization": stolen}), 401)

    # a chunked body longer than the slot: 413, as with a Content-Length
    async def longer() -> AsyncIterator[bytes]:
        yield data
        yield opaque(100_000)

    assert_error(await http.put(put, content=longer(), headers={"Authorization": auth}), 413)
    # a client that disconnects midway (past the first MiB, which the store has written): nothing
    # charged, no bytes left, and the slot may be retried
    data = opaque(3 << 20)
    put, auth, _ = await slot(alice, "interrupted.bin", len(data))
    host, port = urlsplit(put).hostname, urlsplit(put).port
    _, writer = await asyncio.open_connection(host, port)
    path = put.split(f":{port}", 1)[1]
    head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: {len(data)}\r\n\r\n"
    writer.write(head.encode() + data[: 2 << 20])
    await writer.drain()
    await asyncio.sleep(0.5)
    assert await gallery.parts.store.clean_staging(3600) == 0  # (only older ones: none)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert await gallery.parts.store.clean_staging(0) == 0
    assert (await gallery.parts.users.quota("alice@localhost")).used == 0
    r = await http.put(put, content=data, headers={"Authorization": auth})
    assert r.status_code == 201, r.text
    assert (await gallery.parts.users.quota("alice@localhost")).used == len(data)


async def test_the_uploaders_quota_applies(gallery, http, alice):
    headers = await login(gallery, "alice@localhost")
    await gallery.parts.users.set_quota("alice@localhost", 1000)
    put, auth, _ = await slot(alice, "big.bin", 1001)
    body = assert_error(await http.put(put, content=opaque(1001), headers={"Authorization": auth}), 403)
    assert "quota" in body["error"]
    put, auth, _ = await slot(alice, "fits.bin", 1000)
    assert (await http.put(put, content=opaque(1000), headers={"Authorization": auth})).status_code == 201
    assert (await http.get("/api/v1/account/quota/", headers=headers)).json()["used"] == 1000


async def test_a_first_upload_creates_the_user(gallery, http, alice):
    """Prosody's users need not have logged in to gallery: the upload creates their record."""
    put, auth, _ = await slot(alice, "first.bin", 10)
    assert await user_doc(gallery, "alice@localhost") is None
    assert (await http.put(put, content=opaque(10), headers={"Authorization": auth})).status_code == 201
    assert (await gallery.parts.users.quota("alice@localhost")).used == 10


async def test_prosodys_expires_is_honoured_and_the_sweeper_removes_the_file(gallery, http, alice):
    """Prosody never deletes in external mode: its `expires` (2 s here) becomes expires_at; the
    links then answer 404 and the sweeper removes the file, its quota and its content."""
    data = opaque(2048)
    put, auth, get = await slot(alice, "brief.bin", len(data), host=BRIEF)
    expires = claims_of(auth)["expires"]
    r = await http.put(put, content=data, headers={"Authorization": auth})
    assert r.status_code == 201, r.text
    assert dt.datetime.fromisoformat(r.json()["expires_at"]) == dt.datetime.fromtimestamp(expires, dt.UTC)
    assert (await http.get(get)).content == data
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
    assert_error(await http.get(get), 404)
    assert_error(await http.get(r.json()["file"]), 404)

    async def released() -> bool:
        return (await gallery.parts.users.quota("alice@localhost")).used == 0

    await wait_until(released, within=5, message="the sweeper to give the quota back")

    async def content_gone() -> bool:  # the delete gives the quota back first, then the content
        return await gallery.parts.db.blobs.find_one({"_id": sha256(data)}) is None

    await wait_until(content_gone, within=5, message="the sweeper to remove the content")
    assert not await stored(gallery, sha256(data))


async def test_retention_message_applies_to_prosody_uploads(gallery, http, alice):
    gallery.settings.retention.message = 2  # days
    put, auth, _ = await slot(alice, "kept two days.bin", 10)
    before = dt.datetime.now(dt.UTC)
    r = await http.put(put, content=opaque(10), headers={"Authorization": auth})
    expires_at = dt.datetime.fromisoformat(r.json()["expires_at"])
    assert before + dt.timedelta(days=2, seconds=-1) <= expires_at <= before + dt.timedelta(days=2, seconds=5)


async def test_a_method_tornado_refuses_is_logged_cleanly(gallery, http, caplog):
    """A method outside Tornado's own list is refused before the route's arguments are set; the
    access log line of /media/ and /share/ still works (it read them and raised)."""
    for path in ("/media/abcdefghijklmnop/x.bin", "/share/abcdefghijklmnop/x.bin"):
        with caplog.at_level("INFO"):
            assert_error(await http.request("PROPFIND", path), 405)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
        assert any("status=405" in r.getMessage() for r in caplog.records if r.name == "gallery.access")
        caplog.clear()


async def test_the_route_is_off_without_a_secret(client):
    assert_error(await client.put("/share/abcdefghijklmnop/x.bin", content=b"x"), 404)
    assert_error(await client.get("/share/abcdefghijklmnop/x.bin"), 404)


def test_the_share_route_is_documented(settings):
    """Not in handlers.ROUTES (it exists only when configured): documented all the same."""
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    settings.prosody_share.secret = SECRET
    [(pattern, handler)] = prosody_share.routes(settings)
    path = _route_to_openapi(pattern)
    assert path == "/share/{slot_id}/{name}" and path in spec["paths"]
    assert _methods(handler) == {"get", "head", "put", "options"}
    assert all(method in spec["paths"][path] for method in _methods(handler))
    assert "expires_at" in spec["components"]["schemas"]["File"]["required"]
