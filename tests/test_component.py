"""The XEP-0363 upload component against the real Prosody: discovery, slots, errors, the PUT.

The service attaches its component (upload.localhost) to the session's Prosody; test users are
slixmpp clients on that server and upload with slixmpp's own XEP-0363 plugin, or send raw slot
requests; aioxmpp is the second client library.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from server import Service
from services.fsck import fsck
from settings import Settings
from tests.helpers import GIF, assert_error, login, opaque, staging, upload, user_doc, wait_until
from tests.prosody import OTHER_DOMAIN, Prosody, XmppUser, configure_component

UPLOAD_NS = "urn:xmpp:http:upload:0"
PURPOSE_NS = "urn:xmpp:http:upload:purpose:0"
ERR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
QUOTA = "/api/v1/account/quota/"


async def start(settings: Settings, prosody: Prosody, tmp_path: Path, **overrides: Any) -> Service:
    configure_component(settings, prosody, overrides)
    service = Service(settings, data_dir=tmp_path / "data")
    await service.start()
    assert service.parts is not None and service.parts.component is not None
    component = service.parts.component
    await wait_until(lambda: component.state == "connected", 10, "the component's session")
    return service


@pytest.fixture
async def gallery(settings: Settings, prosody: Prosody, tmp_path: Path) -> AsyncIterator[Service]:
    service = await start(settings, prosody, tmp_path)
    yield service
    await service.stop()


@pytest.fixture
async def http(gallery: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gallery.url, timeout=30) as c:
        yield c


async def uploader(xmpp_user, name: str = "alice") -> XmppUser:
    user = await xmpp_user(name)
    user.client.register_plugin("xep_0363")
    return user


def slot_iq(user: XmppUser, service: str, filename: str, size: int | str, content_type: str | None = None, **purpose: Any):
    """A raw slot request; `purpose={"name": "ephemeral", "expire-before": "..."}` adds a child."""
    iq = user.client.make_iq_get(ito=JID(service))
    request = iq["http_upload_request"]
    request["filename"] = filename
    request["size"] = str(size)
    if content_type is not None:
        request["content-type"] = content_type
    if purpose:
        attrs = dict(purpose)
        name = attrs.pop("name")
        ET.SubElement(request.xml, f"{{{PURPOSE_NS}}}{name}", attrs)
    return iq


async def request_slot(user: XmppUser, service: str, filename: str, size: int | str, content_type: str | None = None, **purpose):
    """(put_url, headers, get_url) for a granted slot."""
    reply = await slot_iq(user, service, filename, size, content_type, **purpose).send(timeout=10)
    slot = reply["http_upload_slot"]
    headers = [(h["name"], h["value"]) for h in slot["put"]["headers"]]
    return slot["put"]["url"], headers, slot["get"]["url"]


async def refused(user: XmppUser, service: str, filename: str, size: int | str, content_type: str | None = None, **purpose):
    """The error of a refused slot request: (type, condition, text, error element)."""
    with pytest.raises(IqError) as caught:
        await slot_iq(user, service, filename, size, content_type, **purpose).send(timeout=10)
    iq = caught.value.iq
    error = iq["error"]
    assert iq.xml.find(f"{{{UPLOAD_NS}}}request") is not None  # the request is echoed
    return error["type"], error["condition"], error["text"], error.xml


# -- discovery ------------------------------------------------------------------------------


async def test_the_users_server_lists_the_component_and_disco_info_is_what_clients_expect(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    disco = alice.client.plugin["xep_0030"]
    items = await disco.get_items(jid=JID(prosody.domain), timeout=10)
    assert prosody.component_jid in [item[0] for item in items["disco_items"]["items"]]
    info = await disco.get_info(jid=JID(prosody.component_jid), timeout=10)
    identities = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    assert ("store", "file") in identities
    features = set(info["disco_info"]["features"])
    assert UPLOAD_NS in features
    assert {f"{PURPOSE_NS}#message", f"{PURPOSE_NS}#profile", f"{PURPOSE_NS}#ephemeral"} <= features
    assert f"{PURPOSE_NS}#permanent" not in features  # not enabled by default
    forms = [f["values"] for f in info["disco_info"].iterables if f["values"].get("FORM_TYPE") == [UPLOAD_NS]]
    assert forms and forms[0]["max-file-size"] == str(gallery.settings.limits.max_file_size)
    # slixmpp's own discovery finds it from the user's domain
    found = await alice.client.plugin["xep_0363"].find_upload_service(domain=JID(prosody.domain), timeout=10)
    assert found is not None and found["from"] == JID(prosody.component_jid)


async def test_permanent_is_offered_when_enabled(settings, prosody, tmp_path, xmpp_user):
    settings.xmpp.component.permanent = True
    service = await start(settings, prosody, tmp_path)
    try:
        alice = await uploader(xmpp_user)
        info = await alice.client.plugin["xep_0030"].get_info(jid=JID(prosody.component_jid), timeout=10)
        assert f"{PURPOSE_NS}#permanent" in info["disco_info"]["features"]
        url = await alice.client.plugin["xep_0363"].upload_file(
            "keep.bin", input_file=_bytes(opaque(100)), purpose="permanent", domain=JID(prosody.domain), timeout=10
        )
        async with httpx.AsyncClient() as c:
            assert (await c.get(url)).status_code == 200
        files = await _listing(service, alice.jid)
        assert [f["context"] for f in files] == ["permanent"]
    finally:
        await service.stop()


# -- uploads --------------------------------------------------------------------------------


def _bytes(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


async def _listing(service: Service, jid: str) -> list[dict]:
    headers = await login(service, jid)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        r = await c.get("/api/v1/files/", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["items"]


async def test_slixmpp_upload_file_end_to_end(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    data = GIF
    url = await alice.client.plugin["xep_0363"].upload_file(
        "tiny pic é.gif", input_file=_bytes(data), domain=JID(prosody.domain), timeout=10
    )
    assert url.startswith(f"{gallery.url}/media/") and url.endswith("/tiny%20pic%20%C3%A9.gif")
    async with httpx.AsyncClient() as c:
        got = await c.get(url)
        assert got.status_code == 200 and got.content == data
        assert got.headers["Content-Type"] == "image/gif"
    files = await _listing(gallery, alice.jid)
    assert len(files) == 1
    f = files[0]
    assert f["file"] == url and f["name"] == "tiny pic é.gif" and f["context"] == "message" and f["size"] == len(data)
    assert f["thumbnail"] is not None  # made before the 201
    async with httpx.AsyncClient() as c:
        assert (await c.get(f["thumbnail"]["url"])).status_code == 200


@pytest.mark.parametrize("purpose", ["message", "profile", "ephemeral"])
async def test_purposes_become_the_files_context(gallery, xmpp_user, prosody, purpose):
    alice = await uploader(xmpp_user)
    await alice.client.plugin["xep_0363"].upload_file(
        f"{purpose}.bin", input_file=_bytes(opaque(64)), purpose=purpose, domain=JID(prosody.domain), timeout=10
    )
    assert [f["context"] for f in await _listing(gallery, alice.jid)] == [purpose]


async def test_slot_headers_are_exactly_one_authorization(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    put, headers, get = await request_slot(alice, prosody.component_jid, "a b.txt", 5, "text/plain")
    assert len(headers) == 1
    name, value = headers[0]
    assert name == "Authorization"  # exactly, case included (Gajim, Conversations)
    assert "\n" not in value and "\r" not in value and value.startswith("Bearer ")
    split_put, split_get = urlsplit(put), urlsplit(get)
    assert split_put.path.startswith("/upload/") and split_put.path.endswith("/a%20b.txt")
    assert split_get.path.startswith("/media/") and split_get.path.endswith("/a%20b.txt")
    slot_id = split_put.path.split("/")[2]
    assert split_get.path.split("/")[2] == slot_id and len(slot_id) >= 16
    async with httpx.AsyncClient() as c:
        r = await c.put(put, content=b"hello", headers={name: value, "Content-Type": "text/plain"})
        assert r.status_code == 201, r.text
        got = await c.get(get)
        assert got.status_code == 200 and got.content == b"hello"


# -- errors ---------------------------------------------------------------------------------


async def test_too_large_is_file_too_large_with_max_file_size(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    limit = gallery.settings.limits.max_file_size
    kind, condition, text, error = await refused(alice, prosody.component_jid, "big.bin", limit + 1)
    assert (kind, condition) == ("modify", "not-acceptable")
    assert str(limit) in text
    size = error.find(f"{{{UPLOAD_NS}}}file-too-large/{{{UPLOAD_NS}}}max-file-size")
    assert size is not None and size.text == str(limit)


async def test_malformed_requests_are_bad_request(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    for filename, size in (("a.bin", "lots"), ("a.bin", "-1"), ("", "5")):
        kind, condition, _, _ = await refused(alice, prosody.component_jid, filename, size)
        assert (kind, condition) == ("modify", "bad-request")
    kind, condition, _, _ = await refused(alice, prosody.component_jid, "a", 5, name="ephemeral", **{"expire-before": "soon"})
    assert (kind, condition) == ("modify", "bad-request")
    kind, condition, _, _ = await refused(alice, prosody.component_jid, "a", 5, name="permanent")
    assert (kind, condition) == ("cancel", "feature-not-implemented")


async def test_a_user_of_another_domain_is_forbidden(gallery, xmpp_user, prosody):
    dave = await uploader(xmpp_user, "dave")
    assert dave.jid.endswith("@" + OTHER_DOMAIN)
    kind, condition, _, _ = await refused(dave, prosody.component_jid, "a.bin", 5)
    assert (kind, condition) == ("auth", "forbidden")
    assert await user_doc(gallery, dave.jid) is None


async def test_quota_counts_issued_slots_and_says_where_to_free_space(gallery, xmpp_user, prosody, http):
    alice = await uploader(xmpp_user)
    await gallery.parts.users.create(alice.jid)
    await gallery.parts.users.set_quota(alice.jid, 1000)
    put, headers, _ = await request_slot(alice, prosody.component_jid, "first.bin", 600)
    assert (await gallery.parts.users.quota(alice.jid)).used == 600  # reserved at issue
    # a second slot would overrun it together with the first: refused, retry when the first expires
    kind, condition, text, error = await refused(alice, prosody.component_jid, "second.bin", 600)
    assert (kind, condition) == ("wait", "resource-constraint")
    assert "600 bytes of 1000 bytes used" in text and "/api/v1/files/" in text and gallery.url in text
    retry = error.find(f"{{{UPLOAD_NS}}}retry")
    assert retry is not None
    stamp = dt.datetime.fromisoformat(retry.get("stamp").replace("Z", "+00:00"))
    assert retry.get("stamp").endswith("Z")
    slot = await gallery.parts.db.slots.find_one({"name": "first.bin"})
    assert abs((stamp - slot["expires"]).total_seconds()) <= 2
    # more than the whole quota can never fit: no retry
    kind, condition, text, error = await refused(alice, prosody.component_jid, "huge.bin", 1001)
    assert (kind, condition) == ("cancel", "resource-constraint")
    assert error.find(f"{{{UPLOAD_NS}}}retry") is None
    # the PUT turns the reservation into the file's charge: used stays 600, not 1200
    async with httpx.AsyncClient() as c:
        r = await c.put(put, content=opaque(600), headers=dict(headers))
        assert r.status_code == 201, r.text
    assert (await gallery.parts.users.quota(alice.jid)).used == 600
    kind, condition, _, error = await refused(alice, prosody.component_jid, "third.bin", 600)
    assert (kind, condition) == ("cancel", "resource-constraint")


async def test_rate_limit_is_wait_with_retry(settings, prosody, tmp_path, xmpp_user):
    settings.limits.uploads_per_window = 2
    settings.limits.upload_window = 60
    service = await start(settings, prosody, tmp_path)
    try:
        alice = await uploader(xmpp_user)
        for i in range(2):
            await request_slot(alice, prosody.component_jid, f"{i}.bin", 5)
        kind, condition, _, error = await refused(alice, prosody.component_jid, "2.bin", 5)
        assert (kind, condition) == ("wait", "resource-constraint")
        stamp = error.find(f"{{{UPLOAD_NS}}}retry").get("stamp")
        retry = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert dt.timedelta(0) < retry - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=61)
    finally:
        await service.stop()


# -- the PUT --------------------------------------------------------------------------------


async def _slot(gallery: Service, user: XmppUser, prosody: Prosody, size: int, name: str = "f.bin", ctype=None):
    put, headers, get = await request_slot(user, prosody.component_jid, name, size, ctype)
    return put, dict(headers), get


async def test_put_hostile_cases(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    data = opaque(1000)
    put, headers, get = await _slot(gallery, alice, prosody, len(data), ctype="application/octet-stream")
    async with httpx.AsyncClient() as c:
        assert_error(await c.put(put, content=data), 401)  # no token
        assert_error(await c.put(put, content=data, headers={"Authorization": "Bearer nonsense"}), 401)
        token = headers["Authorization"]
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        assert_error(await c.put(put, content=data, headers={"Authorization": forged}), 403)
        assert_error(await c.put(put, content=data[:-1], headers=headers), 413)  # wrong length
        assert_error(await c.put(put, content=data + b"x", headers=headers), 413)
        r = await c.put(put, content=data, headers={**headers, "Content-Type": "image/png"})
        assert_error(r, 415)
        assert_error(await c.put(put.replace("/f.bin", "/g.bin"), content=data, headers=headers), 404)
        # a token of another slot does not open this one
        _, headers2, _ = await _slot(gallery, alice, prosody, len(data))
        assert_error(await c.put(put, content=data, headers=headers2), 403)
        # none of that spent the slot
        r = await c.put(put, content=data, headers={**headers, "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert (await c.get(get)).content == data
        assert_error(await c.put(put, content=data, headers=headers), 409)  # used
    assert (await gallery.parts.users.quota(alice.jid)).used == 2 * len(data)  # the file + slot 2's reservation


async def test_expired_slot_is_410_and_releases_its_reservation(settings, prosody, tmp_path, xmpp_user):
    settings.limits.slot_ttl = 1
    service = await start(settings, prosody, tmp_path)
    try:
        alice = await uploader(xmpp_user)
        put, headers, _ = await _slot(service, alice, prosody, 100)
        assert (await service.parts.users.quota(alice.jid)).used == 100
        await asyncio.sleep(1.2)
        async with httpx.AsyncClient() as c:
            assert_error(await c.put(put, content=opaque(100), headers=headers), 410)
        assert (await service.parts.users.quota(alice.jid)).used == 0
        # the sweeper ends slots nobody touches
        await _slot(service, alice, prosody, 50)
        await asyncio.sleep(1.2)
        assert await service.ctx.slots.sweep() == 1
        assert (await service.parts.users.quota(alice.jid)).used == 0
    finally:
        await service.stop()


async def _raw_put(url: str, headers: dict[str, str], length: int, body: bytes) -> socket.socket:
    """A PUT announcing `length` bytes that sends only `body` (in a thread: the service reads it
    on this loop)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    await asyncio.to_thread(sock.sendall, head.encode() + body)
    return sock


async def test_a_disconnect_midway_charges_nothing_and_leaves_no_temp_file(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    size = 3 << 20
    put, headers, get = await _slot(gallery, alice, prosody, size)
    sock = await _raw_put(put, headers, size, opaque(size // 2))
    for _ in range(300):
        await asyncio.sleep(0.05)
        if staging(gallery.parts.store):
            break
    sock.close()
    for _ in range(300):
        await asyncio.sleep(0.05)
        slot = await gallery.parts.db.slots.find_one({"name": "f.bin"})
        if slot["state"] == "failed" and not staging(gallery.parts.store):
            break
    assert slot["state"] == "failed"
    assert staging(gallery.parts.store) == []
    assert (await gallery.parts.users.quota(alice.jid)).used == 0
    async with httpx.AsyncClient() as c:
        assert (await c.get(get)).status_code == 404
        assert_error(await c.put(put, content=opaque(size), headers=headers), 409)
        # a new slot works
        put, headers, get = await _slot(gallery, alice, prosody, 10)
        assert (await c.put(put, content=b"0123456789", headers=headers)).status_code == 201
        assert (await c.get(get)).content == b"0123456789"


async def test_a_client_gone_while_its_whole_upload_commits_leaves_a_used_slot(gallery, xmpp_user, prosody):
    """The body arrived whole, then the client went while thumbnails were being made: the file is
    stored and charged, so its slot is used, not failed (the file's GET link works)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (1800, 1800), opaque(1800 * 1800 * 3)).save(buffer, "PNG", compress_level=0)
    data = buffer.getvalue()
    alice = await uploader(xmpp_user)
    put, headers, get = await _slot(gallery, alice, prosody, len(data), "noise.png", "image/png")
    sock = await _raw_put(put, {**headers, "Content-Type": "image/png"}, len(data), data)
    sock.close()  # at once: the answer comes after the thumbnails
    async with httpx.AsyncClient() as c:

        async def stored() -> bool:
            return (await c.get(get)).status_code == 200

        await wait_until(stored, within=30, message="the file")
        await asyncio.sleep(0.5)  # the slot's state is set after the file
        slot = await gallery.parts.db.slots.find_one({"name": "noise.png"})
        assert slot["state"] == "used"
        assert (await gallery.parts.users.quota(alice.jid)).used == len(data)


async def test_a_slow_body_is_cut_off_by_the_body_timeout(settings, prosody, tmp_path, xmpp_user):
    settings.server.body_timeout = 1
    service = await start(settings, prosody, tmp_path)
    try:
        alice = await uploader(xmpp_user)
        put, headers, _ = await _slot(service, alice, prosody, 1000)
        sock = await _raw_put(put, headers, 1000, b"x" * 10)
        await asyncio.sleep(2)
        for _ in range(300):
            slot = await service.parts.db.slots.find_one({"name": "f.bin"})
            if slot["state"] == "failed":
                break
            await asyncio.sleep(0.05)
        sock.close()
        assert slot["state"] == "failed"
        assert staging(service.parts.store) == []
        assert (await service.parts.users.quota(alice.jid)).used == 0
    finally:
        await service.stop()


async def test_cors_preflight_for_put(gallery, http):
    r = await http.options(
        "/upload/anything/a.bin",
        headers={"Origin": "https://web.example", "Access-Control-Request-Method": "PUT"},
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "PUT" in r.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


async def test_rest_and_component_files_share_one_listing_and_quota(gallery, xmpp_user, prosody, http):
    alice = await uploader(xmpp_user)
    headers = await login(gallery, alice.jid)
    r = await upload(http, headers, opaque(300), "rest.bin")
    assert r.status_code == 201, r.text
    await alice.client.plugin["xep_0363"].upload_file(
        "xmpp.bin", input_file=_bytes(opaque(200)), domain=JID(prosody.domain), timeout=10
    )
    r = await http.get("/api/v1/files/", headers=headers)
    assert sorted(f["name"] for f in r.json()["items"]) == ["rest.bin", "xmpp.bin"]
    assert (await http.get(QUOTA, headers=headers)).json()["used"] == 500
    # deletable like any other file
    xmpp_file = next(f for f in r.json()["items"] if f["name"] == "xmpp.bin")
    r = await http.delete("/api/v1/files/", params={"id": xmpp_file["id"]}, headers=headers)
    assert r.status_code == 200 and r.json()["used"] == 300


async def test_healthz_reports_the_component(gallery, http):
    r = await http.get("/healthz")
    assert r.status_code == 200
    assert r.json()["component"] == "connected"


async def test_healthz_without_a_component(client):
    assert (await client.get("/healthz")).json()["component"] == "disabled"


# -- a second client library ------------------------------------------------------------------


async def test_aioxmpp_requests_a_slot_and_uploads(gallery, prosody):
    """aioxmpp (its own XSOs and header allowlist, the one Conversations and Gajim apply too)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import aioxmpp
        import aioxmpp.httpupload
        import aioxmpp.security_layer as sl

    async def password(_jid, attempt):
        return "bob-pw" if attempt == 0 else None

    layer = sl.SecurityLayer(
        ssl_context_factory=sl.default_ssl_context,
        certificate_verifier_factory=sl._NullVerifier,
        tls_required=False,  # the test server speaks plain XMPP (SCRAM, no TLS)
        sasl_providers=[sl.PasswordSASLProvider(password)],
    )
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(prosody.jid("bob")),
        layer,
        override_peer=[("127.0.0.1", prosody.port, aioxmpp.connector.STARTTLSConnector())],
    )
    data = opaque(4096)
    async with client.connected():
        slot = await aioxmpp.httpupload.request_slot(
            client, aioxmpp.JID.fromstr(prosody.component_jid), "from aioxmpp.bin", len(data), "application/octet-stream"
        )
    headers = list(slot.put.headers.items())
    assert [name for name, _ in headers] == ["Authorization"]  # survived aioxmpp's allowlist
    async with httpx.AsyncClient() as c:
        r = await c.put(slot.put.url, content=data, headers={**dict(headers), "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert (await c.get(slot.get.url)).content == data
    assert [f["name"] for f in await _listing(gallery, prosody.jid("bob"))] == ["from aioxmpp.bin"]


# -- login codes from the component, fsck ---------------------------------------------------------


async def test_login_codes_come_from_the_component_without_a_client_account(settings, prosody, tmp_path, xmpp_user):
    settings.auth.code_interval = 0
    gallery = await start(settings, prosody, tmp_path)
    try:
        assert gallery.parts.xmpp is None
        component = JID(gallery.settings.xmpp.component.jid)
        alice = await xmpp_user("alice")
        async with httpx.AsyncClient(base_url=gallery.url, timeout=30) as http:
            r = await http.post("/api/v1/account/xmpp_code_request/", json={"jid": alice.jid})
            assert r.status_code == 201, r.text
            assert r.json()["api_jid"] == component.bare
            code, msg = await alice.next_code()
            assert msg["from"] == component
            r = await http.post("/api/v1/account/xmpp_auth/", json={"jid": alice.jid, "code": code})
            assert r.status_code == 201, r.text
            # type=iq too: the confirm IQ comes from the component to the full JID
            r = await http.post("/api/v1/account/xmpp_code_request/", json={"jid": alice.full_jid, "type": "iq"})
            assert r.status_code == 201, r.text
            iq = await asyncio.wait_for(alice.iqs.get(), 10)
            assert iq["from"] == component and iq["confirm"]["id"].isdigit()
    finally:
        await gallery.stop()


async def test_fsck_keeps_live_reservations_and_ends_expired_slots(gallery, xmpp_user, prosody):
    ctx = gallery.parts
    await gallery.ctx.slots.stop()  # fsck runs with the service stopped: no sweeper
    alice = await uploader(xmpp_user)
    await request_slot(alice, prosody.component_jid, "live.bin", 100)
    await request_slot(alice, prosody.component_jid, "stale.bin", 40)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await ctx.db.slots.update_one({"name": "stale.bin"}, {"$set": {"expires": past}})
    # a crash between a reservation and its slot document: 7 bytes reserved for nothing
    await ctx.db.users.update_one({"_id": alice.jid}, {"$inc": {"used": 7}})
    assert (await ctx.users.quota(alice.jid)).used == 147
    report = await fsck(ctx)
    assert report.slots_ended == 1 and report.used_fixed == 1
    assert (await ctx.users.quota(alice.jid)).used == 100  # the live slot still holds its size
    assert (await ctx.db.slots.find_one({"name": "stale.bin"}))["state"] == "expired"


# -- races, reconnects ----------------------------------------------------------------------------


async def test_two_concurrent_slots_cannot_overrun_the_quota(gallery, xmpp_user, prosody):
    alice, bob = await uploader(xmpp_user), await uploader(xmpp_user, "bob")
    for user in (alice, bob):
        await gallery.parts.users.create(user.jid)
        await gallery.parts.users.set_quota(user.jid, 1000)

    async def attempt(user: XmppUser, name: str) -> bool:
        try:
            await request_slot(user, prosody.component_jid, name, 600)
            return True
        except IqError:
            return False

    results = await asyncio.gather(*(attempt(alice, f"{i}.bin") for i in range(6)))
    assert sum(results) == 1
    assert (await gallery.parts.users.quota(alice.jid)).used == 600
    assert await attempt(bob, "bob.bin")  # quotas are per user


async def test_two_puts_on_one_slot_store_one_file(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    data = opaque(2 << 20)
    put, headers, _ = await _slot(gallery, alice, prosody, len(data))
    async with httpx.AsyncClient(timeout=30) as c:
        answers = await asyncio.gather(*(c.put(put, content=data, headers=headers) for _ in range(3)))
    assert sorted(r.status_code for r in answers) == [201, 409, 409]
    assert len(await _listing(gallery, alice.jid)) == 1
    assert (await gallery.parts.users.quota(alice.jid)).used == len(data)


async def test_ephemeral_expire_before_reaches_the_slot(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    stamp = when.isoformat().replace("+00:00", "Z")
    put, headers, _ = await request_slot(alice, prosody.component_jid, "e.bin", 3, name="ephemeral", **{"expire-before": stamp})
    slot = await gallery.parts.db.slots.find_one({"name": "e.bin"})
    assert slot["context"] == "ephemeral" and slot["expires_before"] == when
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    kind, condition, text, _ = await refused(
        alice, prosody.component_jid, "e.bin", 3, name="ephemeral", **{"expire-before": past}
    )
    assert (kind, condition) == ("modify", "bad-request") and "past" in text
    async with httpx.AsyncClient() as c:
        assert (await c.put(put, content=b"abc", headers=dict(headers))).status_code == 201
    assert [f["context"] for f in await _listing(gallery, alice.jid)] == ["ephemeral"]


async def test_the_component_reconnects_and_healthz_follows(settings, own_prosody, tmp_path):
    service = await start(settings, own_prosody, tmp_path)
    component = service.parts.component
    component.backoff_max = 1
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            assert (await http.get("/healthz")).json()["component"] == "connected"
            own_prosody.stop()
            for _ in range(200):
                r = await http.get("/healthz")
                if r.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 503 and r.json()["component"] in ("connecting", "disconnected")
            own_prosody.start()
            await wait_until(lambda: component.state == "connected", 15, "the component's reconnect")
            assert (await http.get("/healthz")).status_code == 200
            assert component.sessions == 2
        alice = XmppUser(own_prosody, "alice")
        await alice.connect()
        alice.client.register_plugin("xep_0363")
        try:
            url = await alice.client.plugin["xep_0363"].upload_file(
                "after.bin", input_file=_bytes(b"again"), domain=JID(own_prosody.domain), timeout=10
            )
            assert url.startswith(service.url)
        finally:
            await alice.disconnect()
    finally:
        await service.stop()
    assert component.state == "stopped"


async def test_a_wrong_secret_is_reported_not_fatal(settings, prosody, tmp_path):
    configure_component(settings, prosody)
    settings.xmpp.component.secret = "not-the-secret"
    service = Service(settings, data_dir=tmp_path / "data")
    await service.start()  # the service runs; the component keeps trying
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            r = await http.get("/healthz")
            assert r.status_code == 503 and r.json()["component"] in ("connecting", "disconnected")
            assert r.json()["db"] == "ok"
    finally:
        await service.stop()


async def test_over_quota_with_expiring_files_retries_when_they_expire(gallery, xmpp_user, prosody, http):
    alice = await uploader(xmpp_user)
    headers = await login(gallery, alice.jid)
    await gallery.parts.users.set_quota(alice.jid, 1000)
    for name, size in (("keep.bin", 300), ("soon.bin", 200), ("later.bin", 400)):
        assert (await upload(http, headers, opaque(size), name)).status_code == 201
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    soon, later = now + dt.timedelta(hours=1), now + dt.timedelta(hours=2)
    await gallery.parts.db.files.update_one({"name": "soon.bin"}, {"$set": {"expires_at": soon}})
    await gallery.parts.db.files.update_one({"name": "later.bin"}, {"$set": {"expires_at": later}})
    # 100 bytes free: 250 fit once soon.bin (200) is gone, 500 once later.bin is gone too; the
    # sweeper removes an expired file within retention.sweep_interval, and the stamp says so
    sweep = dt.timedelta(seconds=gallery.settings.retention.sweep_interval)
    for size, moment in ((250, soon), (500, later)):
        kind, condition, text, error = await refused(alice, prosody.component_jid, "new.bin", size)
        assert (kind, condition) == ("wait", "resource-constraint"), text
        stamp = dt.datetime.fromisoformat(error.find(f"{{{UPLOAD_NS}}}retry").get("stamp").replace("Z", "+00:00"))
        assert moment + sweep <= stamp <= moment + sweep + dt.timedelta(seconds=1)
    # an issued slot, expiring before soon.bin, gives its room back first
    await request_slot(alice, prosody.component_jid, "pending.bin", 100)
    slot = await gallery.parts.db.slots.find_one({"name": "pending.bin"})
    kind, condition, text, error = await refused(alice, prosody.component_jid, "new.bin", 100)
    assert (kind, condition) == ("wait", "resource-constraint"), text
    stamp = dt.datetime.fromisoformat(error.find(f"{{{UPLOAD_NS}}}retry").get("stamp").replace("Z", "+00:00"))
    expires = slot["expires"].replace(tzinfo=dt.UTC)
    assert expires <= stamp <= expires + dt.timedelta(seconds=1)
    # more than the expiring files free: no moment helps
    kind, condition, _, error = await refused(alice, prosody.component_jid, "new.bin", 800)
    assert (kind, condition) == ("cancel", "resource-constraint") and error.find(f"{{{UPLOAD_NS}}}retry") is None


async def test_chunked_puts_must_bring_exactly_the_slots_size(gallery, xmpp_user, prosody):
    alice = await uploader(xmpp_user)
    data = opaque(300_000)

    def chunks(body: bytes):
        async def gen():
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        return gen()

    async with httpx.AsyncClient(timeout=30) as c:
        for body in (data + b"extra", data[:-1]):
            put, headers, get = await _slot(gallery, alice, prosody, len(data))
            r = await c.put(put, content=chunks(body), headers=headers)
            assert_error(r, 413)
            assert (await c.get(get)).status_code == 404
        put, headers, get = await _slot(gallery, alice, prosody, len(data))
        r = await c.put(put, content=chunks(data), headers=headers)
        assert r.status_code == 201, r.text
        assert (await c.get(get)).content == data
    assert (await gallery.parts.users.quota(alice.jid)).used == len(data)
    assert staging(gallery.parts.store) == []


async def test_undecodable_paths_are_a_400(gallery, http, caplog):
    """A path that is not UTF-8 once percent-decoded is refused before the handler runs; the
    access log must still be written (it used to raise, the fuzzer found it)."""
    for method in ("PUT", "OPTIONS"):
        r = await http.request(method, "/upload/%ff%fe/a.bin", content=b"x")
        assert_error(r, 400)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_many_slots_at_once_are_not_uploads_in_flight(gallery, xmpp_user, prosody):
    """Conversations asks for a slot per file when several are shared at once: more slot requests
    at once than limits.concurrent_uploads_per_user are all granted (the gate counts PUTs)."""
    gallery.ctx.files.gate.per_user = 2
    alice = await uploader(xmpp_user)
    slots = await asyncio.gather(*(request_slot(alice, prosody.component_jid, f"{i}.bin", 10) for i in range(8)))
    assert len({put for put, _, _ in slots}) == 8
    async with httpx.AsyncClient(timeout=30) as c:
        answers = await asyncio.gather(*(c.put(put, content=b"0123456789", headers=dict(h)) for put, h, _ in slots))
        # PUTs are uploads in flight: past the gate a 429, and the slot stays usable (and reserved)
        refused = [slot for slot, r in zip(slots, answers, strict=True) if r.status_code == 429]
        assert refused and all(r.status_code in (201, 429) for r in answers)
        assert all(r.headers.get("Retry-After") for r in answers if r.status_code == 429)
        for put, headers, get in refused:
            assert (await c.put(put, content=b"0123456789", headers=dict(headers))).status_code == 201
            assert (await c.get(get)).content == b"0123456789"
    assert len(await _listing(gallery, alice.jid)) == 8
    assert (await gallery.parts.users.quota(alice.jid)).used == 80
