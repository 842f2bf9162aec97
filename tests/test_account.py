"""account/: login over XMPP against a real Prosody, codes and their limits, tokens, deletion, admin."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid

import pytest

import models.codes
from models.codes import MAX_ATTEMPTS
from tests.helpers import assert_error, bearer, issue_token, login, sha256, stored, upload, user_doc, wait_until
from tests.prosody import (
    ACCOUNT,
    ADMIN,
    AUTH,
    CODE_REQUEST,
    LIST,
    QUOTA,
    TOKENS,
    configure,
    login_over_xmpp,
    request_code,
)

CAROL = "carol@localhost"  # never online: codes sent to her are held offline by Prosody


@pytest.fixture
def overrides(request):
    """Per-test settings: `@pytest.mark.parametrize("overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest.fixture
def settings(settings, prosody, overrides):
    return configure(settings, prosody, overrides)


def parse_time(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# -- the whole flow -----------------------------------------------------------------------------


async def test_login_flow_end_to_end(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    before = dt.datetime.now(dt.UTC)
    r = await request_code(client, "Alice@LOCALHOST")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"request_id", "api_jid", "expires"}
    uuid.UUID(body["request_id"])
    assert body["api_jid"] == "gallery@localhost"
    ttl = service.settings.auth.code_ttl
    assert before + dt.timedelta(seconds=ttl - 5) < parse_time(body["expires"]) < before + dt.timedelta(seconds=ttl + 5)
    assert await user_doc(service, "alice@localhost") is None  # no user before a code is verified

    code, msg = await alice.next_code()
    assert len(code) == 6 and code.isdigit()
    assert msg["type"] == "chat"
    assert msg["body"] == f"Verification code is {code}"
    assert msg["from"].bare == "gallery@localhost"
    assert msg["confirm"]["id"] == code
    assert msg["confirm"]["method"] == "POST"
    assert msg["confirm"]["url"] == f"{service.url}/api/v1/account/xmpp_auth/"
    assert msg.xml.find("{urn:xmpp:hints}no-store") is not None

    doc = await service.parts.db.codes.find_one({"_id": "alice@localhost"})
    assert code not in str(doc) and doc["request_id"] == body["request_id"]  # only a hash is stored

    r = await client.post(AUTH, json={"jid": "alice@localhost/phone", "code": code, "device": "Pixel", "client": "Xabber"})
    assert r.status_code == 201, r.text
    login_body = r.json()
    assert set(login_body) == {"token", "token_id", "expires"}
    assert len(login_body["token"]) >= 43
    token_ttl = service.settings.auth.token_ttl
    assert parse_time(login_body["expires"]) > before + dt.timedelta(seconds=token_ttl - 60)
    headers = bearer(login_body["token"])

    user = await user_doc(service, "alice@localhost")
    assert user is not None and user["quota"] is None and user["used"] == 0
    r = await client.get(QUOTA, headers=headers)
    assert r.json() == {"quota": service.settings.quota.default, "used": 0, "available": service.settings.quota.default}
    r = await client.get(TOKENS, headers=headers)
    assert r.status_code == 200
    [token] = r.json()
    assert token["token_id"] == login_body["token_id"] and token["current"] is True
    assert token["device"] == "Pixel" and token["client"] == "Xabber"

    # the code was single-use
    assert_error(await client.post(AUTH, json={"jid": "alice@localhost", "code": code}), 403)

    r = await client.delete(ACCOUNT, headers=headers)
    assert r.status_code == 204, r.text
    assert_error(await client.get(QUOTA, headers=headers), 401)
    assert await user_doc(service, "alice@localhost") is None


async def test_second_login_keeps_the_user(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    first = await login_over_xmpp(client, alice)
    await upload(client, first, b"kept", "k.txt")
    second = await login_over_xmpp(client, alice, device="laptop")
    assert first != second
    r = await client.get(QUOTA, headers=second)
    assert r.json()["used"] == 4
    assert len((await client.get(TOKENS, headers=first)).json()) == 2


async def test_a_new_request_replaces_the_code(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    assert (await request_code(client, alice.jid)).status_code == 201
    old, _ = await alice.next_code()
    assert (await request_code(client, alice.jid)).status_code == 201
    new, _ = await alice.next_code()
    if old != new:
        assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": old}), 403)
    r = await client.post(AUTH, json={"jid": alice.jid, "code": new})
    assert r.status_code == 201, r.text


async def test_type_iq_sends_a_confirm_iq(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    r = await request_code(client, alice.full_jid, type="iq")
    assert r.status_code == 201, r.text
    iq = await asyncio.wait_for(alice.iqs.get(), 10)
    assert iq["type"] == "get" and iq["from"].bare == "gallery@localhost"
    assert iq["id"] == r.json()["request_id"]  # how a client matches the IQ to its request
    code = iq["confirm"]["id"]
    assert len(code) == 6 and iq["confirm"]["method"] == "POST"
    assert iq["confirm"]["url"] == f"{service.url}/api/v1/account/xmpp_auth/"
    await alice.no_message(0.2)  # the IQ, not a message
    r = await client.post(AUTH, data={"jid": alice.jid, "code": code})  # form-encoded works too
    assert r.status_code == 201, r.text


async def test_type_iq_refused_by_the_user_voids_the_code(client, service, xmpp_user):
    alice = await xmpp_user("alice")

    def deny(iq):
        reply = iq.reply()
        reply["type"] = "error"
        reply["error"]["type"] = "auth"
        reply["error"]["condition"] = "not-authorized"
        reply.send()

    alice.answer_iq = deny
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201
    code = (await asyncio.wait_for(alice.iqs.get(), 10))["confirm"]["id"]

    async def voided() -> bool:
        return (await service.parts.db.codes.find_one({"_id": alice.jid}))["hash"] is None

    await wait_until(voided, message="the refused code to be voided")
    assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": code}), 403)


async def test_type_iq_needs_a_full_jid_and_type_is_checked(client, xmpp_user):
    body = assert_error(await request_code(client, "alice@localhost", type="iq"), 400)
    assert "jid" in body["fields"]
    body = assert_error(await request_code(client, "alice@localhost", type="sms"), 400)
    assert "type" in body["fields"]


async def test_undeliverable_code_is_503_and_forgotten(client, service):
    r = await request_code(client, "nobody@localhost")  # no such account on the server: it bounces
    body = assert_error(r, 503)
    assert "not be sent" in body["error"]
    assert r.headers["Retry-After"]
    assert await service.parts.db.codes.find_one({"_id": "nobody@localhost"}) is None
    r = await request_code(client, "alice@localhost/offline-resource", type="iq")
    assert_error(r, 503)


# -- asking again ---------------------------------------------------------------------------------


def silent(user) -> None:
    """Make a test user behave like the Xabber apps: a confirm IQ is never answered."""
    user.answer_iq = lambda iq: None


async def next_iq(user, within: float = 10):
    return await asyncio.wait_for(user.iqs.get(), within)


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30}], indirect=True)
async def test_same_full_jid_asking_again_gets_a_new_code_at_once(client, service, xmpp_user):
    """A web client that reconnected before it used its code asks again within the interval: it
    gets a new code whose IQ carries the new request id; the old code stops working."""
    alice = await xmpp_user("alice")
    silent(alice)
    first = await request_code(client, alice.full_jid, type="iq")
    assert first.status_code == 201, first.text
    old_iq = await next_iq(alice)
    second = await request_code(client, alice.full_jid, type="iq")
    assert second.status_code == 201, second.text
    new_iq = await next_iq(alice)
    assert old_iq["id"] == first.json()["request_id"] != second.json()["request_id"] == new_iq["id"]
    old, new = old_iq["confirm"]["id"], new_iq["confirm"]["id"]
    if old != new:
        assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": old}), 403)
    r = await client.post(AUTH, json={"jid": alice.jid, "code": new})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30}], indirect=True)
async def test_asking_again_keeps_the_wrong_attempts(client, service, xmpp_user):
    """Replacing a code within the interval never buys more guesses: the attempts carry over."""
    alice = await xmpp_user("alice")
    silent(alice)
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201
    code = (await next_iq(alice))["confirm"]["id"]
    for _ in range(MAX_ATTEMPTS - 1):
        assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": other_code(code)}), 403)
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201
    code = (await next_iq(alice))["confirm"]["id"]
    assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": other_code(code)}), 429)  # the 5th
    assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": code}), 429)  # void now
    r = await request_code(client, alice.full_jid, type="iq")  # a void code is not replaced early
    assert_error(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 30


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30}], indirect=True)
async def test_others_asking_within_the_interval_are_refused(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    other = await xmpp_user("alice")  # another client of the same user
    silent(alice)
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201
    assert_error(await request_code(client, other.full_jid, type="iq"), 429)  # another resource
    assert_error(await request_code(client, alice.full_jid), 429)  # a message, even to the same JID
    assert_error(await request_code(client, alice.jid), 429)


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30, "auth.codes_per_jid_per_hour": 2}], indirect=True)
async def test_a_used_code_does_not_hold_up_the_next_login(client, service, xmpp_user):
    """After a login, the next request (a client that logs in on every reconnect) is served at
    once and is not counted against the JID; unused codes still are."""
    alice = await xmpp_user("alice")
    silent(alice)
    for _ in range(4):  # twice the hourly limit, well within the interval; only the first counts
        r = await request_code(client, alice.full_jid, type="iq")
        assert r.status_code == 201, r.text
        iq = await next_iq(alice)
        assert iq["id"] == r.json()["request_id"]
        assert (await client.post(AUTH, json={"jid": alice.jid, "code": iq["confirm"]["id"]})).status_code == 201
    assert (await request_code(client, alice.jid)).status_code == 201  # after a login: any type, any resource
    code, _ = await alice.next_code()
    assert (await client.post(AUTH, json={"jid": alice.jid, "code": code})).status_code == 201
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201  # after a login: free
    await next_iq(alice)
    assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201  # unused before: 2nd counted
    await next_iq(alice)
    r = await request_code(client, alice.full_jid, type="iq")  # codes nobody uses: the JID's limit holds
    assert_error(r, 429)
    assert "for this JID" in r.json()["error"]


@pytest.mark.parametrize("overrides", [{"auth.code_ttl": 60}], indirect=True)
async def test_a_login_is_remembered_for_an_hour(client, service, xmpp_user):
    """Long after the code's own lifetime, the next request still counts as one after a login."""
    alice = await xmpp_user("alice")
    await login_over_xmpp(client, alice)
    doc = await service.parts.db.codes.find_one({"_id": alice.jid})
    assert doc["hash"] is None and doc["used_at"] is not None
    assert doc["expires"] - doc["used_at"] >= dt.timedelta(seconds=models.codes.USED_KEPT - 1)  # the TTL keeps it
    assert await service.parts.codes.admission(alice.jid, alice.jid, "message") == (0, True)


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30, "auth.codes_per_address_per_hour": 3}], indirect=True)
async def test_asking_again_counts_against_the_address(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    silent(alice)
    for _ in range(3):
        assert (await request_code(client, alice.full_jid, type="iq")).status_code == 201
        await next_iq(alice)
    r = await request_code(client, alice.full_jid, type="iq")
    assert_error(r, 429)
    assert "address" in r.json()["error"]


# -- wrong, expired, malformed codes ------------------------------------------------------------


async def test_wrong_codes_then_void(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    assert (await request_code(client, alice.jid)).status_code == 201
    code, _ = await alice.next_code()
    wrong = other_code(code)
    for attempt in range(1, MAX_ATTEMPTS):
        body = assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": wrong}), 403)
        assert f"{MAX_ATTEMPTS - attempt} attempt" in body["error"]
    r = await client.post(AUTH, json={"jid": alice.jid, "code": wrong})
    assert_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1
    for _ in range(2):  # void now, even with the right code
        r = await client.post(AUTH, json={"jid": alice.jid, "code": code})
        assert_error(r, 429)
        assert "Retry-After" in r.headers
    assert await user_doc(service, alice.jid) is None
    # a new code works again
    assert (await request_code(client, alice.jid)).status_code == 201
    code, _ = await alice.next_code()
    assert (await client.post(AUTH, json={"jid": alice.jid, "code": code})).status_code == 201


async def test_concurrent_wrong_attempts_cannot_exceed_the_limit(client, service):
    issued = await service.parts.codes.issue(CAROL)
    wrong = other_code(issued.code)
    answers = await asyncio.gather(*(client.post(AUTH, json={"jid": CAROL, "code": wrong}) for _ in range(12)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [403] * (MAX_ATTEMPTS - 1) + [429] * (12 - MAX_ATTEMPTS + 1), statuses
    assert_error(await client.post(AUTH, json={"jid": CAROL, "code": issued.code}), 429)


async def test_a_code_is_used_once_even_concurrently(client, service):
    issued = await service.parts.codes.issue(CAROL)
    answers = await asyncio.gather(*(client.post(AUTH, json={"jid": CAROL, "code": issued.code}) for _ in range(5)))
    assert sorted(r.status_code for r in answers) == [201, 403, 403, 403, 403]


@pytest.mark.parametrize("overrides", [{"auth.code_ttl": 1}], indirect=True)
async def test_expired_code(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    assert (await request_code(client, alice.jid)).status_code == 201
    code, _ = await alice.next_code()
    await asyncio.sleep(1.2)
    body = assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": code}), 403)
    assert "expired" in body["error"]


async def test_code_without_request(client):
    body = assert_error(await client.post(AUTH, json={"jid": CAROL, "code": "123456"}), 403)
    assert "request a code" in body["error"]


async def test_integer_codes_are_zero_padded(client, service, monkeypatch):
    monkeypatch.setattr(models.codes, "new_code", lambda: "004217")
    await service.parts.codes.issue(CAROL)
    r = await client.post(AUTH, json={"jid": CAROL, "code": 4217})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", "12 345", "١٢٣٤٥٦", 1_000_000, -1, 12.5, True, {"a": 1}, ""])
async def test_malformed_codes_are_400(client, code):
    body = assert_error(await client.post(AUTH, json={"jid": CAROL, "code": code}), 400)
    assert "code" in body.get("fields", {}) or "code" in body["error"]


@pytest.mark.parametrize(
    "jid",
    [
        "localhost",
        "example.org",
        "@localhost",
        "alice@",
        "a b@localhost",
        "a@b@c",
        "x" * 1100 + "@localhost",
        "",
        None,
        5,
        {"a": "b"},
    ],
)
async def test_invalid_jids_are_400(client, jid):
    for path in (CODE_REQUEST, AUTH):
        r = await client.post(path, json={"jid": jid, "code": "123456"})
        assert_error(r, 400)
    assert_error(await client.delete(ACCOUNT, params={"jid": jid, "code": "123456"} if isinstance(jid, str) else {}), 400)


# -- limits and lists ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{"auth.code_interval": 30}], indirect=True)
async def test_interval_between_requests_per_jid(client, service):
    assert (await request_code(client, CAROL)).status_code == 201
    r = await request_code(client, CAROL)
    body = assert_error(r, 429)
    assert 25 <= int(r.headers["Retry-After"]) <= 30, r.headers["Retry-After"]
    assert "30 s" in body["error"]
    assert (await request_code(client, ADMIN)).status_code == 201  # another JID is not affected


@pytest.mark.parametrize("overrides", [{"auth.codes_per_jid_per_hour": 2}], indirect=True)
async def test_codes_per_jid_per_hour(client):
    for _ in range(2):
        assert (await request_code(client, CAROL)).status_code == 201
    r = await request_code(client, "Carol@Localhost/other")  # the same bare JID
    assert_error(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    assert (await request_code(client, ADMIN)).status_code == 201


@pytest.mark.parametrize("overrides", [{"auth.codes_per_address_per_hour": 2}], indirect=True)
async def test_codes_per_address_per_hour(client):
    assert (await request_code(client, CAROL)).status_code == 201
    assert (await request_code(client, ADMIN)).status_code == 201
    r = await request_code(client, "bob@localhost")
    assert_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("overrides", [{"auth.codes_per_address_per_hour": 1, "server.xheaders": True}], indirect=True)
async def test_address_comes_from_the_proxy_with_xheaders(client):
    for address in ("192.0.2.1", "192.0.2.2", "2001:db8::1"):
        r = await client.post(CODE_REQUEST, json={"jid": CAROL}, headers={"X-Real-IP": address})
        assert r.status_code == 201, r.text
    # the same IPv6 /64 is one client
    assert_error(await client.post(CODE_REQUEST, json={"jid": CAROL}, headers={"X-Real-IP": "2001:db8::2"}), 429)
    assert_error(await client.post(CODE_REQUEST, json={"jid": CAROL}, headers={"X-Real-IP": "192.0.2.1"}), 429)


@pytest.mark.parametrize("overrides", [{"auth.attempts_per_address_per_hour": 3}], indirect=True)
async def test_attempts_per_address_per_hour(client, service):
    issued = await service.parts.codes.issue(CAROL)
    for _ in range(3):
        assert_error(await client.post(AUTH, json={"jid": CAROL, "code": other_code(issued.code)}), 403)
    r = await client.post(AUTH, json={"jid": CAROL, "code": issued.code})
    assert_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "overrides",
    [{"auth.deny": ["carol@localhost", "spam.example"], "auth.allow_domains": ["localhost", "spam.example"]}],
    indirect=True,
)
async def test_deny_and_allow_lists(client, service):
    for jid in ("carol@localhost", "Carol@LocalHost/x", "someone@spam.example", "someone@other.example"):
        assert_error(await request_code(client, jid), 403)
        assert_error(await client.post(AUTH, json={"jid": jid, "code": "123456"}), 403)
    assert (await request_code(client, ADMIN)).status_code == 201
    # an admin who denies a JID after its code was sent: the code no longer logs in
    issued = await service.parts.codes.issue("bob@localhost")
    service.settings.auth.deny.append("bob@localhost")
    assert_error(await client.post(AUTH, json={"jid": "bob@localhost", "code": issued.code}), 403)


# -- tokens -------------------------------------------------------------------------------------


async def test_tokens_list_and_revoke(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    main = await login_over_xmpp(client, alice, device="phone", client="Xabber")
    issued = [await issue_token(service.parts, alice.jid, f"d{i}", "c") for i in range(3)]
    others = {i.token_id: bearer(i.token) for i in issued}

    r = await client.get(TOKENS, headers=main)
    assert r.status_code == 200
    items = r.json()
    assert len(items) == 4
    for item in items:
        assert set(item) == {"token_id", "device", "client", "created_at", "expires", "last_used_at", "current"}
        assert parse_time(item["created_at"]) and parse_time(item["expires"])
    assert [i["device"] for i in items if i["current"]] == ["phone"]
    assert all(i.token not in r.text for i in issued) and main["Authorization"].split()[1] not in r.text
    docs = await service.parts.db.tokens.find({"owner": alice.jid}).to_list()
    assert all(doc["hash"] not in r.text for doc in docs)
    current = next(i for i in items if i["current"])
    assert current["last_used_at"] is not None

    # revoke one: it stops working at once
    first = issued[0].token_id
    assert (await client.get(QUOTA, headers=others[first])).status_code == 200
    r = await client.delete(TOKENS, headers=main, params={"token_id": first})
    assert r.status_code == 204, r.text
    assert_error(await client.get(QUOTA, headers=others[first]), 401)
    assert_error(await client.delete(TOKENS, headers=main, params={"token_id": first}), 404)
    assert_error(await client.delete(TOKENS, headers=main, params={"token_id": "nope"}), 404)
    # another user's token is a 404 and stays valid
    bob = await login(service, "bob@localhost")
    bob_id = (await client.get(TOKENS, headers=bob)).json()[0]["token_id"]
    assert_error(await client.request("DELETE", TOKENS, headers=main, json={"token_id": bob_id}), 404)
    assert (await client.get(QUOTA, headers=bob)).status_code == 200

    # all but the current one
    r = await client.request("DELETE", TOKENS, headers=main, json={"all": True})
    assert r.status_code == 204
    for token_id in list(others)[1:]:
        assert_error(await client.get(QUOTA, headers=others[token_id]), 401)
    assert (await client.get(QUOTA, headers=main)).status_code == 200
    assert [i["current"] for i in (await client.get(TOKENS, headers=main)).json()] == [True]
    assert (await client.get(QUOTA, headers=bob)).status_code == 200

    # bad requests
    assert_error(await client.delete(TOKENS, headers=main), 400)
    assert_error(await client.delete(TOKENS, headers=main, params={"all": "maybe"}), 400)
    assert_error(await client.delete(TOKENS, headers=main, params={"all": "false"}), 400)
    assert_error(await client.delete(TOKENS, headers=main, params={"all": "true", "token_id": first}), 400)
    assert_error(await client.get(TOKENS), 401)
    assert_error(await client.delete(TOKENS, params={"all": "true"}), 401)

    # revoking the current token logs out
    current_id = (await client.get(TOKENS, headers=main)).json()[0]["token_id"]
    assert (await client.delete(TOKENS, headers=main, params={"token_id": current_id})).status_code == 204
    assert_error(await client.get(TOKENS, headers=main), 401)


async def test_last_used_at_is_written_at_most_once_a_minute(client, service):
    headers = await login(service, "carol@localhost")
    await client.get(QUOTA, headers=headers)
    first = (await client.get(TOKENS, headers=headers)).json()[0]["last_used_at"]
    await asyncio.sleep(0.01)
    await client.get(QUOTA, headers=headers)
    assert (await client.get(TOKENS, headers=headers)).json()[0]["last_used_at"] == first


# -- deleting an account ------------------------------------------------------------------------


async def test_delete_account_with_code_removes_everything(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    headers = await login_over_xmpp(client, alice)
    other_token = await issue_token(service.parts, alice.jid)
    mine, shared = os.urandom(3000), os.urandom(2000)
    own = (await upload(client, headers, mine, "mine.bin")).json()
    await upload(client, headers, shared, "shared.bin")
    bob = await login(service, "bob@example.org")
    bobs = (await upload(client, bob, shared, "bobs.bin")).json()
    assert await stored(service, sha256(mine))

    # wrong codes share the counter with xmpp_auth
    assert (await request_code(client, alice.jid)).status_code == 201
    code, _ = await alice.next_code()
    for _ in range(MAX_ATTEMPTS - 1):
        assert_error(await client.request("DELETE", ACCOUNT, json={"jid": alice.jid, "code": other_code(code)}), 403)
    assert (await client.get(QUOTA, headers=headers)).status_code == 200  # nothing deleted
    r = await client.request("DELETE", ACCOUNT, json={"jid": alice.jid, "code": code})
    assert r.status_code == 204, r.text

    assert await user_doc(service, alice.jid) is None
    assert await service.parts.db.tokens.count_documents({"owner": alice.jid}) == 0
    assert await service.parts.db.codes.count_documents({"_id": alice.jid}) == 0
    assert await service.parts.db.files.count_documents({"owner": alice.jid}) == 0
    assert_error(await client.get(QUOTA, headers=headers), 401)
    assert_error(await client.get(QUOTA, headers=bearer(other_token.token)), 401)
    assert (await client.get(own["file"])).status_code == 404
    assert not await stored(service, sha256(mine))
    # content bob still links to stays
    assert await stored(service, sha256(shared))
    assert (await client.get(bobs["file"])).content == shared
    assert (await client.get(QUOTA, headers=bob)).json()["used"] == len(shared)


async def test_delete_account_by_code_voids_after_five_wrong(client, service, xmpp_user):
    alice = await xmpp_user("alice")
    assert (await request_code(client, alice.jid)).status_code == 201
    code, _ = await alice.next_code()
    for _ in range(MAX_ATTEMPTS - 1):
        assert_error(await client.delete(ACCOUNT, params={"jid": alice.jid, "code": other_code(code)}), 403)
    assert_error(await client.post(AUTH, json={"jid": alice.jid, "code": other_code(code)}), 429)
    assert_error(await client.delete(ACCOUNT, params={"jid": alice.jid, "code": code}), 429)


async def test_delete_account_bad_requests(client, service):
    assert_error(await client.delete(ACCOUNT), 400)
    assert_error(await client.delete(ACCOUNT, params={"jid": CAROL}), 400)
    assert_error(await client.delete(ACCOUNT, params={"code": "123456"}), 400)
    assert_error(await client.delete(ACCOUNT, params={"jid": CAROL, "code": "123456"}), 403)
    r = await client.delete(ACCOUNT, headers={"Authorization": "Bearer nope"})
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_delete_account_by_token_removes_files(client, service):
    headers = await login(service, "dave@example.org")
    data = os.urandom(1000)
    f = (await upload(client, headers, data, "a.bin")).json()
    assert (await client.delete(ACCOUNT, headers=headers)).status_code == 204
    assert (await client.get(f["file"])).status_code == 404
    assert not await stored(service, sha256(data))
    assert await user_doc(service, "dave@example.org") is None
    assert_error(await client.delete(ACCOUNT, headers=headers), 401)


# -- admin --------------------------------------------------------------------------------------


async def test_admin_quota(client, service):
    admin = await login(service, ADMIN)
    alice = await login(service, "alice@localhost")
    r = await client.put(QUOTA, headers=admin, json={"jid": "Alice@LocalHost", "value": 5000})
    assert r.status_code == 200, r.text
    assert r.json() == {"jid": "alice@localhost", "quota": 5000, "used": 0, "available": 5000}
    assert (await client.get(QUOTA, headers=alice)).json() == {"quota": 5000, "used": 0, "available": 5000}
    assert_error(await upload(client, alice, os.urandom(6000), "big.bin"), 403)
    # form-encoded, and without jid: the caller's own
    r = await client.put(QUOTA, headers=admin, data={"value": "0"})
    assert r.json() == {"jid": ADMIN, "quota": 0, "used": 0, "available": 0}

    assert_error(await client.put(QUOTA, headers=alice, json={"jid": "alice@localhost", "value": 10**12}), 403)
    assert_error(await client.put(QUOTA, headers=alice, json={"value": "bad"}), 403)  # non-admins learn nothing more
    assert_error(await client.put(QUOTA, headers=admin, json={"jid": "nobody@localhost", "value": 1}), 404)
    for bad in (-1, "abc", 1.5, 2**63, True, None, {"a": 1}, ""):
        assert_error(await client.put(QUOTA, headers=admin, json={"jid": "alice@localhost", "value": bad}), 400)
    assert_error(await client.put(QUOTA, headers=admin, json={"jid": "localhost", "value": 1}), 400)
    assert_error(await client.put(QUOTA, json={"value": 1}), 401)


async def test_admin_account_list(client, service):
    admin = await login(service, ADMIN)
    names = [f"user{i}@localhost" for i in range(5)] + ["x@example.org", "y@other.example"]
    tokens = {name: await login(service, name) for name in names}
    await upload(client, tokens["user1@localhost"], b"one", "1.txt")
    await upload(client, tokens["user1@localhost"], b"two", "2.txt")
    await service.parts.db.files.update_one({"owner": "user1@localhost", "name": "2.txt"}, {"$set": {"is_avatar": True}})

    r = await client.get(LIST, headers=admin, params={"obj_per_page": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total_objects"] == 8 and body["total_pages"] == 3 and body["page"] == 1 and body["obj_per_page"] == 3
    assert [i["jid"] for i in body["items"]] == sorted([*names, ADMIN])[:3]
    everyone = (await client.get(LIST, headers=admin, params={"obj_per_page": 500})).json()["items"]
    item = next(i for i in everyone if i["jid"] == "user1@localhost")
    assert set(item) == {"jid", "quota", "used", "files", "avatars", "created_at", "last_login"}
    assert item["files"] == 1 and item["avatars"] == 1 and item["used"] == 6
    assert item["quota"] == service.settings.quota.default
    assert parse_time(item["created_at"]) and parse_time(item["last_login"])

    r = await client.get(LIST, headers=admin, params={"vhost": "LocalHost", "obj_per_page": 2, "page": 3})
    body = r.json()
    assert body["total_objects"] == 6 and body["total_pages"] == 3
    assert [i["jid"] for i in body["items"]] == ["user3@localhost", "user4@localhost"]
    r = await client.get(LIST, headers=admin, params={"vhost": "example.org"})
    assert [i["jid"] for i in r.json()["items"]] == ["x@example.org"]
    r = await client.get(LIST, headers=admin, params={"vhost": "nowhere.example"})
    assert r.json() == {"total_pages": 0, "total_objects": 0, "obj_per_page": 50, "page": 1, "items": []}
    r = await client.get(LIST, headers=admin, params={"page": 99})
    assert r.status_code == 200 and r.json()["items"] == []

    for params in ({"obj_per_page": 0}, {"obj_per_page": 501}, {"page": 0}, {"page": "x"}, {"vhost": "a@b"}, {"vhost": "-bad-"}):
        assert_error(await client.get(LIST, headers=admin, params=params), 400)
    assert_error(await client.get(LIST, headers=tokens["x@example.org"]), 403)
    assert_error(await client.get(LIST), 401)


# -- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CODE_REQUEST, AUTH, ACCOUNT])
async def test_malformed_bodies_are_4xx(client, path):
    method = "DELETE" if path == ACCOUNT else "POST"
    cases = [
        ({"Content-Type": "application/json"}, b"{"),
        ({"Content-Type": "application/json"}, b"[1, 2]"),
        ({"Content-Type": "application/json"}, b'"text"'),
        ({"Content-Type": "application/json"}, b'{"jid": {"a": 1}, "code": "123456"}'),
        ({"Content-Type": "application/json"}, b'{"jid": "a\\u0000b@localhost", "code": "123456"}'),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"jid=%ff%fe&code=123456"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nnot a part"),
        ({"Content-Type": "text/plain"}, b"jid=carol@localhost"),
    ]
    for headers, content in cases:
        r = await client.request(method, path, headers=headers, content=content)
        assert 400 <= r.status_code < 500, (content, r.status_code, r.text)
        assert_error(r, r.status_code)
