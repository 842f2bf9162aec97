"""Xabber web and Xabber iOS log in exactly as their sources do it (../shared/clients/xabber.md §2).

Web (`accounts.js` initGalleryAuth / onGetIQ / onAuthCode): POST a JSON body `{"jid": <full JID of
the connection>, "type": "iq"}` with `Content-Type: application/json`; every confirm IQ that
arrives before the HTTP answer is buffered by its stanza id; on the answer the app looks for the
buffered IQ whose id is `request_id` (or takes one that arrives afterwards, within 5 s); it never
replies to the IQ; it then posts `{"jid": <bare>, "code": "<string>"}` and reads `token` and
`expires` (`new Date(expires)`).
iOS (`getCode`, `parseCodeFromStanza`, `getToken`): the same request; it only checks that the
answer is JSON; the code is `confirm/@id` of an IQ of type get; no reply; then
`{"code": code, "jid": <bare>}` and it reads `token`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time

import pytest
from slixmpp import Iq

from tests.prosody import AUTH, CODE_REQUEST, QUOTA, XmppUser, configure

WEB_ACCEPT = "application/json, text/javascript, */*; q=0.01"
WEB_WAIT = 5  # seconds the web app waits for the code after the answer, then disables the gallery
HTTP_AUTH = "http://jabber.org/protocol/http-auth"


@pytest.fixture
def settings(settings, prosody):
    return configure(settings, prosody, {"auth.code_interval": 30})  # the default interval is on


@dataclasses.dataclass
class Arrival:
    iq: Iq
    at: float  # time.monotonic()


class XabberClient:
    """The XMPP side of an app: records every confirm IQ get, answers none of them."""

    def __init__(self, user: XmppUser) -> None:
        self.user = user
        user.answer_iq = lambda iq: None  # neither app replies
        self.arrivals: list[Arrival] = []
        self.new = asyncio.Event()
        user.client.add_event_handler("http_confirm_iq", self._on_iq)

    def _on_iq(self, iq: Iq) -> None:
        self.arrivals.append(Arrival(iq, time.monotonic()))
        self.new.set()

    async def wait_for(self, predicate, within: float, start: int = 0):
        """The first IQ recorded from index `start` on that satisfies `predicate`, waiting up to
        `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            for arrival in self.arrivals[start:]:
                if predicate(arrival.iq):
                    return arrival
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.new.clear()
            try:
                await asyncio.wait_for(self.new.wait(), left)
            except TimeoutError:
                return None


async def web_login(client, app: XabberClient, iq_first: bool = False) -> dict:
    """initGalleryAuth → onAuthCode → xmpp_auth, as the web app does it; returns what it read.
    With `iq_first`, the app takes the HTTP answer only once an IQ has arrived (the usual order,
    made certain): the code must then come from the buffer."""
    body = json.dumps({"jid": app.user.full_jid, "type": "iq"})
    headers = {"Content-Type": "application/json", "Accept": WEB_ACCEPT}
    before = len(app.arrivals)
    sending = asyncio.ensure_future(client.post(CODE_REQUEST, content=body, headers=headers))
    if iq_first:
        assert await app.wait_for(lambda iq: True, 10, start=before) is not None
    r = await sending
    answered = time.monotonic()
    assert r.status_code == 201, r.text
    request_id = r.json()["request_id"]  # "nothing happens without it"
    assert isinstance(request_id, str) and request_id
    # buffered before the answer, or arriving after it (used at once), matched by stanza id
    buffered = {a.iq["id"]: a for a in app.arrivals[before:] if a.at <= answered}
    if iq_first:
        assert request_id in buffered, f"the buffered IQs {list(buffered)} do not match request_id {request_id}"
    arrival = buffered.get(request_id) or await app.wait_for(lambda iq: iq["id"] == request_id, WEB_WAIT, start=before)
    assert arrival is not None, f"no confirm IQ with id {request_id} within {WEB_WAIT} s: the app disables the gallery"
    iq = arrival.iq
    assert iq["type"] == "get" and iq["from"].bare == "gallery@localhost"
    assert iq.xml.find(f"{{{HTTP_AUTH}}}confirm") is not None
    code = iq["confirm"]["id"]
    # the 201 is not held back once the IQ left (the IQ usually arrives first)
    assert answered - arrival.at < WEB_WAIT
    r = await client.post(AUTH, content=json.dumps({"jid": app.user.jid, "code": str(code)}), headers=headers)
    assert r.status_code == 201, r.text
    token, expires = r.json()["token"], r.json()["expires"]
    assert isinstance(token, str) and len(token) >= 32
    when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))  # new Date(expires)
    assert expires.endswith("Z") and when > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return {"token": token, "expires": when, "request_id": request_id, "code": code}


async def ios_login(client, app: XabberClient) -> str:
    """getCode → parseCodeFromStanza → getToken, as the iOS app does it; returns the token."""
    before = len(app.arrivals)
    r = await client.post(CODE_REQUEST, json={"jid": app.user.full_jid, "type": "iq"})  # JSONEncoding
    assert r.status_code == 201, r.text
    assert isinstance(r.json(), dict)  # all it checks
    arrival = await app.wait_for(lambda iq: iq["type"] == "get" and iq["confirm"]["id"], 10, start=before)
    assert arrival is not None
    code = arrival.iq.xml.find(f"{{{HTTP_AUTH}}}confirm").get("id")  # confirm/@id
    r = await client.post(AUTH, json={"code": code, "jid": app.user.jid})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert isinstance(token, str) and token
    return token


async def works(client, token: str) -> bool:
    return (await client.get(QUOTA, headers={"Authorization": f"Bearer {token}"})).status_code == 200


@pytest.mark.parametrize("iq_first", [True, False])
async def test_xabber_web_logs_in(client, xmpp_user, iq_first):
    app = XabberClient(await xmpp_user("alice"))
    login = await web_login(client, app, iq_first)
    assert await works(client, login["token"])
    assert [a.iq["id"] for a in app.arrivals] == [login["request_id"]]  # one IQ, the matching one


async def test_xabber_web_logs_in_on_every_reconnect(client, xmpp_user):
    """The web app asks again on every (re)connection: within the 30 s interval, after a login
    and after an interrupted one, from the same resource or a new one."""
    app = XabberClient(await xmpp_user("alice"))
    first = await web_login(client, app, iq_first=True)
    second = await web_login(client, app, iq_first=True)  # reconnected at once, same resource
    assert first["request_id"] != second["request_id"]
    # an interrupted login: the app asked, lost its connection before using the code, asks again
    r = await client.post(CODE_REQUEST, json={"jid": app.user.full_jid, "type": "iq"})
    assert r.status_code == 201, r.text
    third = await web_login(client, app)
    assert third["request_id"] != r.json()["request_id"]
    await app.user.disconnect()
    fresh = XabberClient(await xmpp_user("alice"))  # a new session, a new resource
    fourth = await web_login(client, fresh)
    for login in (first, second, third, fourth):
        assert await works(client, login["token"])


async def test_xabber_ios_logs_in(client, xmpp_user):
    app = XabberClient(await xmpp_user("bob"))
    token = await ios_login(client, app)
    assert await works(client, token)
    assert await works(client, await ios_login(client, app))  # and again, at once


async def test_both_apps_of_one_user(client, xmpp_user):
    web = XabberClient(await xmpp_user("alice"))
    ios = XabberClient(await xmpp_user("alice"))
    assert await works(client, (await web_login(client, web))["token"])
    assert await works(client, await ios_login(client, ios))
    assert all(a.iq["to"].full == web.user.full_jid for a in web.arrivals)  # each IQ to its own client
    assert all(a.iq["to"].full == ios.user.full_jid for a in ios.arrivals)


async def test_a_bare_jid_is_refused_for_type_iq(client):
    """An IQ to a bare JID reaches no client: 400, before anything is sent."""
    r = await client.post(
        CODE_REQUEST,
        content=json.dumps({"jid": "alice@localhost", "type": "iq"}),
        headers={"Content-Type": "application/json", "Accept": WEB_ACCEPT},
    )
    assert r.status_code == 400
    assert r.json()["status"] == "400" and "jid" in r.json()["fields"]
