"""The service's XMPP client against a real Prosody: state, reconnects, failures; JID rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import settings as settings_module
from server import Service
from services.accounts import address_key, parse_code
from services.errors import Invalid
from settings import SettingsError, XmppSettings
from tests.conftest import ServiceFactory
from tests.helpers import assert_error, wait_until
from tests.prosody import AUTH, Prosody, configure, login_over_xmpp, request_code
from xmpp import jids
from xmpp.client import XmppClient, XmppUnavailable


@contextlib.asynccontextmanager
async def running(make_service: ServiceFactory) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """The service on the test's settings, and a client, for the `async with` block only."""
    service = await make_service()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            yield service, client
    finally:
        await make_service.stop(service)


async def health(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/healthz")


async def test_healthz_shows_the_xmpp_session(settings, prosody, make_service):
    configure(settings, prosody)
    async with running(make_service) as (service, client):
        r = await health(client)
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "db": "ok", "xmpp": "connected", "component": "disabled", "storage": "ok"}
    assert service.parts.xmpp.state == "stopped"


async def test_without_xmpp_code_requests_are_503(client):
    r = await request_code(client, "alice@localhost")
    body = assert_error(r, 503)
    assert "not configured" in body["error"]
    assert (await health(client)).json()["xmpp"] == "disabled"


async def test_xmpp_down_and_back(settings, own_prosody: Prosody, make_service, xmpp_user):
    """Down at start-up, up, dropped mid-test, up again on the same port: codes flow whenever
    the session is up, and every request in between is a 503."""
    own_prosody.stop()
    configure(settings, own_prosody)
    started = time.monotonic()
    async with running(make_service) as (service, client):
        assert time.monotonic() - started < 5  # a failed first attempt does not hold up start-up
        xmpp = service.parts.xmpp
        xmpp.backoff_max = 1
        r = await health(client)
        assert r.status_code == 503
        assert r.json()["xmpp"] in ("connecting", "disconnected") and r.json()["status"] == "unavailable"
        body = assert_error(await request_code(client, "alice@localhost"), 503)
        assert "XMPP" in body["error"]

        own_prosody.start()
        await wait_until(lambda: _healthy(client), 15, "the first session")
        alice = await xmpp_user("alice", server=own_prosody)
        await login_over_xmpp(client, alice)

        own_prosody.stop()  # the server goes away mid-test
        await wait_until(lambda: _unhealthy(client), 15, "the session to be noticed lost")
        r = await health(client)
        assert r.json()["xmpp"] in ("connecting", "disconnected")
        r = await request_code(client, "alice@localhost")
        assert_error(r, 503)
        assert r.headers["Retry-After"]
        assert (await service.parts.db.codes.find_one({"_id": "alice@localhost"}))["hash"] is None  # no live code

        own_prosody.start()  # same port, same data
        await wait_until(lambda: _healthy(client), 15, "the reconnect")
        assert xmpp.sessions == 2
        alice = await xmpp_user("alice", server=own_prosody)
        await login_over_xmpp(client, alice)


async def _healthy(client: httpx.AsyncClient) -> bool:
    return (await health(client)).status_code == 200


async def _unhealthy(client: httpx.AsyncClient) -> bool:
    return (await health(client)).status_code == 503


async def test_a_frozen_server_is_detected(settings, own_prosody: Prosody, xmpp_user):
    """A server that stops answering (the TCP connection stays open): sends fail instead of
    hanging or claiming success, and the keepalive ping ends the session."""
    configure(settings, own_prosody)
    xmpp = XmppClient(settings.xmpp, send_timeout=1, ping_interval=0.5, backoff_max=1)
    await xmpp.start()
    try:
        assert xmpp.state == "connected"
        alice = await xmpp_user("alice", server=own_prosody)
        await xmpp.send_code(jids.parse(alice.jid), "123456", "http://example/auth", "message")
        code, _ = await alice.next_code()
        assert code == "123456"
        assert own_prosody.process is not None
        os.kill(own_prosody.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(XmppUnavailable):
                await xmpp.send_code(jids.parse(alice.jid), "654321", "http://example/auth", "message")
            assert time.monotonic() - started < 5

            await wait_until(lambda: xmpp.state != "connected", 15, "the keepalive to end the session")
        finally:
            os.kill(own_prosody.process.pid, signal.SIGCONT)
        await wait_until(lambda: xmpp.state == "connected", 15, "the session to come back")
        assert xmpp.sessions == 2
    finally:
        await xmpp.stop()
    assert xmpp.state == "stopped"


@pytest.mark.parametrize("kind", ["message", "iq"])
async def test_a_busy_process_does_not_fail_delivery(settings, prosody, xmpp_user, kind):
    """Under load the process that runs the service (here it shares its loop with the user's
    client, as in the test suite) can be busy for longer than `send_timeout` right after a code
    was queued. The server answers at once when the stanzas finally leave: that is a delivery,
    not a 503. (The delivery ping used to time out on our own clock, counting the stall.)"""
    configure(settings, prosody)
    xmpp = XmppClient(settings.xmpp, send_timeout=1)
    await xmpp.start()
    try:
        alice = await xmpp_user("alice")
        to = jids.parse(alice.full_jid if kind == "iq" else alice.jid)
        for n, stall in enumerate((1.5, 2.5)):  # longer than send_timeout, and than send_timeout + 1
            code = f"12345{n}"
            asyncio.get_running_loop().call_soon(time.sleep, stall)  # the loop is blocked next
            started = time.monotonic()
            await xmpp.send_code(to, code, "http://example/auth", kind)
            assert time.monotonic() - started < stall + 1  # and not held back once the loop runs
            if kind == "iq":
                assert (await asyncio.wait_for(alice.iqs.get(), 10))["confirm"]["id"] == code
            else:
                assert (await alice.next_code())[0] == code
    finally:
        await xmpp.stop()


async def test_a_paused_machine_does_not_fail_delivery(settings, own_prosody: Prosody, xmpp_user):
    """The whole machine stops after the code left (a VM paused, a host too loaded to schedule
    anyone): our loop and the server sleep together for longer than send_timeout; on waking, the
    server gets its turn a little after us. Its answer comes: a delivery, not a 503."""
    configure(settings, own_prosody)
    xmpp = XmppClient(settings.xmpp, send_timeout=2)
    await xmpp.start()
    try:
        alice = await xmpp_user("alice", server=own_prosody)
        assert own_prosody.process is not None
        pid = own_prosody.process.pid
        loop = asyncio.get_running_loop()

        def machine_paused() -> None:
            time.sleep(2.5)  # we sleep; the server has been stopped since before the code left
            loop.call_later(0.3, os.kill, pid, signal.SIGCONT)  # the server runs again after us

        os.kill(pid, signal.SIGSTOP)
        loop.call_later(0.05, machine_paused)  # by then the code and the ping were written
        try:
            await xmpp.send_code(jids.parse(alice.jid), "123456", "http://example/auth", "message")
        finally:
            os.kill(pid, signal.SIGCONT)
        code, _ = await alice.next_code()
        assert code == "123456"
    finally:
        await xmpp.stop()


async def test_a_server_slower_than_send_timeout_in_total_but_never_silent_that_long(settings, own_prosody, xmpp_user):
    """The server is frozen for half of send_timeout after the code left, then answers: a
    delivery. A server that stays silent longer is a failure (test_a_frozen_server_is_detected)."""
    configure(settings, own_prosody)
    xmpp = XmppClient(settings.xmpp, send_timeout=3)
    await xmpp.start()
    try:
        alice = await xmpp_user("alice", server=own_prosody)
        assert own_prosody.process is not None
        pid = own_prosody.process.pid
        os.kill(pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(1.5, os.kill, pid, signal.SIGCONT)
        try:
            await xmpp.send_code(jids.parse(alice.jid), "123456", "http://example/auth", "message")
        finally:
            os.kill(pid, signal.SIGCONT)
        code, _ = await alice.next_code()
        assert code == "123456"
    finally:
        await xmpp.stop()


async def test_wrong_password_never_connects(settings, prosody, make_service):
    configure(settings, prosody)
    settings.xmpp.password = "wrong"
    started = time.monotonic()
    async with running(make_service) as (_service, client):
        assert time.monotonic() - started < 5
        r = await health(client)
        assert r.status_code == 503 and r.json()["xmpp"] in ("connecting", "disconnected")
        assert_error(await request_code(client, "alice@localhost"), 503)


async def test_require_tls_refuses_a_plain_server(settings, own_prosody: Prosody, make_service):
    configure(settings, own_prosody)
    settings.xmpp.require_tls = True  # the test server offers no TLS at all
    async with running(make_service) as (service, client):
        assert service.parts.xmpp.state != "connected"
        assert_error(await request_code(client, "alice@localhost"), 503)
    assert "Authenticated as gallery@localhost" not in own_prosody.log.read_text()  # no password sent


async def test_stop_leaves_no_tasks_behind(settings, prosody):
    configure(settings, prosody)
    before = asyncio.all_tasks()
    xmpp = XmppClient(settings.xmpp)
    await xmpp.start()
    assert xmpp.state == "connected"
    await xmpp.stop()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
    with pytest.raises(XmppUnavailable):
        await xmpp.send_code(jids.parse("alice@localhost"), "123456", "http://example/auth")


async def test_code_message_is_sent_to_the_full_jid_given(settings, prosody, make_service, xmpp_user):
    configure(settings, prosody)
    async with running(make_service) as (_service, client):
        bob = await xmpp_user("bob", presence=False)  # no presence: only a full JID reaches him live
        assert (await request_code(client, bob.full_jid)).status_code == 201
        code, msg = await bob.next_code()
        assert str(msg["to"]) == bob.full_jid
        assert (await client.post(AUTH, json={"jid": bob.jid, "code": code})).status_code == 201


# -- rules without a server ---------------------------------------------------------------------


async def test_tls_settings_and_address():
    strict = XmppClient(XmppSettings(jid="svc@example.org", password="p"))
    client = strict._make_client()
    assert client.enable_direct_tls and client.enable_starttls and not client.enable_plaintext
    assert client.plugin_config["feature_mechanisms"] == {}  # no SASL over an unencrypted stream
    assert client.ssl_context.verify_mode == ssl.CERT_REQUIRED and client.ssl_context.check_hostname
    assert strict._target() == (None, None)  # DNS SRV of example.org

    lax = XmppClient(XmppSettings(jid="svc@example.org", password="p", host="xmpp.internal", require_tls=False, verify_tls=False))
    client = lax._make_client()
    assert client.enable_plaintext and not client.enable_direct_tls
    assert client.plugin_config["feature_mechanisms"]["unencrypted_plain"] is True
    assert client.ssl_context.verify_mode == ssl.CERT_NONE
    assert lax._target() == ("xmpp.internal", 5222)
    assert XmppClient(XmppSettings(jid="svc@example.org", password="p", port=5223))._target() == ("example.org", 5223)


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("Alice@Example.COM/phone", "alice@example.com/phone"),
        ("alice@example.com.", "alice@example.com"),
        ("ÄLICE@ÉXAMPLE.com", "älice@éxample.com"),
        ("a@[::1]", "a@[::1]"),
    ],
)
def test_jids_are_normalised(text, full):
    assert jids.parse(text).full == full


@pytest.mark.parametrize("text", ["", "example.com", "@example.com", "a@", "a b@c", "a@b@c", "a@b/", "x" * 4000])
def test_bad_user_jids(text):
    with pytest.raises(jids.BadJid):
        jids.parse(text)


def test_addresses_are_counted_per_client():
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("") == "unknown"


def test_codes_are_parsed():
    assert parse_code("012345") == "012345"
    assert parse_code(" 012345 ") == "012345"
    assert parse_code(42) == "000042"
    for bad in ("12345", "0123456", "١٢٣٤٥٦", 10**6, -1, True, 1.0, None):
        with pytest.raises(Invalid):
            parse_code(bad)


def test_jid_settings_are_validated_and_normalised():
    s = settings_module.load(
        Path("/nonexistent"),
        env={
            "GALLERY_ADMINS": "Admin@Example.ORG",
            "GALLERY_AUTH_DENY": "Spam.Example,Bad@X.org",
            "GALLERY_AUTH_ALLOW_DOMAINS": "X.org",
        },
    )
    assert s.admins == ["admin@example.org"]
    assert s.auth.deny == ["spam.example", "bad@x.org"]
    assert s.auth.allow_domains == ["x.org"]
    assert s.server.xheaders is False
    assert settings_module.load(Path("/nonexistent"), env={"GALLERY_SERVER_XHEADERS": "true"}).server.xheaders is True
    for env, key in (
        ({"GALLERY_XMPP_JID": "not a jid@x", "GALLERY_XMPP_PASSWORD": "p"}, "xmpp.jid"),
        ({"GALLERY_XMPP_JID": "example.org", "GALLERY_XMPP_PASSWORD": "p"}, "xmpp.jid"),
        ({"GALLERY_ADMINS": "example.org"}, "admins"),
        ({"GALLERY_AUTH_DENY": "a@b/c"}, "auth.deny"),
        ({"GALLERY_AUTH_ALLOW_DOMAINS": "a@b"}, "auth.allow_domains"),
    ):
        with pytest.raises(SettingsError, match=f"^{key}:"):
            settings_module.load(Path("/nonexistent"), env=env)
