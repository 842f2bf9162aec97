"""A throwaway Prosody for the tests (Debian's `prosody` package), and slixmpp test users.

The process itself (config core, free ports, readiness from its own log line, stop) is
testbed/prosody.py, which the benchmark uses too; the service is configured with
`xmpp.require_tls: false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from slixmpp import JID, ClientXMPP, Iq, Message

from settings import Settings
from testbed.prosody import ProsodyProcess
from tests.helpers import bearer

DOMAIN = "localhost"
PLUGINS = Path(__file__).resolve().parent.parent / "contrib" / "prosody"  # mod_gallery_discovery
GALLERY_URL = "https://gallery.localhost"  # what the session's server advertises (gallery_url)
SERVICE = ("gallery", "gallery-pw")
# alice and bob receive codes in tests; carol is never online (codes sent to her stay offline)
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "admin": "admin-pw"}
ADMIN = "admin@localhost"
# the XEP-0363 component on the same server, and a second host whose users it must refuse
COMPONENT_SECRET = "component-secret"
OTHER_DOMAIN = "other.test"
OTHER_USERS = {"dave": "dave-pw"}

CODE_REQUEST = "/api/v1/account/xmpp_code_request/"
AUTH = "/api/v1/account/xmpp_auth/"
TOKENS = "/api/v1/account/tokens/"
ACCOUNT = "/api/v1/account/"
QUOTA = "/api/v1/account/quota/"
LIST = "/api/v1/account/list/"

# after the shared core (testbed/prosody.py): the service's account's server, discovery, a second
# host, and the component
CONFIG = """\
plugin_paths = {{ "{plugins}" }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "gallery_discovery" }}
gallery_url = "{gallery_url}"

VirtualHost "{domain}"

VirtualHost "{other_domain}"

Component "upload.{domain}"
    component_secret = "{component_secret}"
    name = "Gallery"
"""


@dataclass
class Prosody(ProsodyProcess):
    """The tests' Prosody: their accounts, the discovery module, a second host, the component."""

    domain: str = DOMAIN
    gallery_url: str = GALLERY_URL

    def prepare(self) -> None:
        self.write_config(
            CONFIG.format(
                domain=self.domain,
                plugins=PLUGINS,
                gallery_url=self.gallery_url,
                component_secret=COMPONENT_SECRET,
                other_domain=OTHER_DOMAIN,
            )
        )
        self.register(*SERVICE)
        for user, password in USERS.items():
            self.register(user, password)
        for user, password in OTHER_USERS.items():
            self.register(user, password, OTHER_DOMAIN)

    @property
    def component_jid(self) -> str:
        return f"upload.{self.domain}"

    def register(self, user: str, password: str, domain: str | None = None) -> None:
        super().register(user, password, domain or self.domain)

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"


@contextlib.contextmanager
def running_prosody(**options: Any) -> Iterator[Prosody]:
    if shutil.which("prosody") is None:
        pytest.fail("prosody is not installed: run bin/setup --dev")
    with tempfile.TemporaryDirectory(prefix="gallery-prosody-") as d:
        server = Prosody(Path(d), **options)
        server.prepare()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    """The session's Prosody: stays up for every test."""
    with running_prosody() as server:
        yield server


@pytest.fixture
def own_prosody() -> Iterator[Prosody]:
    """A Prosody for one test, which may stop and restart it."""
    with running_prosody() as server:
        yield server


# -- test users ---------------------------------------------------------------------------------


class XmppUser:
    """A test user connected with slixmpp: collects the messages and confirm IQs it receives."""

    def __init__(self, server: Prosody, user: str) -> None:
        self.jid = server.jid(user) if user in USERS else f"{user}@{OTHER_DOMAIN}"
        self.server = server
        password = USERS.get(user) or OTHER_USERS[user]
        self.client = ClientXMPP(self.jid, password, plugin_config={"feature_mechanisms": {"unencrypted_plain": True}})
        self.client.enable_direct_tls = False
        self.client.enable_starttls = False
        self.client.enable_plaintext = True
        self.client.register_plugin("xep_0030")
        self.client.register_plugin("xep_0070")
        self.client.register_plugin("xep_0199")
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.iqs: asyncio.Queue[Iq] = asyncio.Queue()
        self.answer_iq: Callable[[Iq], Any] = lambda iq: iq.reply().send()
        self.client.add_event_handler("message", self.messages.put_nowait)
        self.client.add_event_handler("http_confirm_iq", self._on_iq)

    def _on_iq(self, iq: Iq) -> None:
        self.iqs.put_nowait(iq)
        self.answer_iq(iq)

    @property
    def full_jid(self) -> str:
        return str(self.client.boundjid)

    async def connect(self, presence: bool = True) -> None:
        self.client.connect(self.server.host, self.server.port)
        await self.client.wait_until("session_start", timeout=10)
        if presence:
            self.client.send_presence()
        # A ping answered means the server has processed the presence and delivered what it held
        # offline: drop that (codes left over from earlier tests).
        await self.client.plugin["xep_0199"].ping(JID(self.server.domain), timeout=10)
        await asyncio.sleep(0.05)
        while not self.messages.empty():
            self.messages.get_nowait()

    async def disconnect(self) -> None:
        if self.client.is_connected():
            await self.client.disconnect(wait=1)
        task = getattr(self.client, "_run_out_filters", None)  # slixmpp's send loop outlives the stream
        if task is not None:
            task.cancel()

    async def next_code(self, within: float = 10) -> tuple[str, Message]:
        """The next verification code message: (code, message)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.messages.get()
                if msg["type"] != "error" and msg["body"].startswith("Verification code is "):
                    return msg["body"].removeprefix("Verification code is "), msg

    async def no_message(self, wait: float = 0.5) -> None:
        with contextlib.suppress(TimeoutError):
            msg = await asyncio.wait_for(self.messages.get(), wait)
            raise AssertionError(f"unexpected message: {msg}")


@pytest.fixture
async def xmpp_user(prosody: Prosody) -> AsyncIterator[Callable[..., Coroutine[Any, Any, XmppUser]]]:
    """Factory: `await xmpp_user("alice")` -> a connected XmppUser with initial presence sent."""
    connected: list[XmppUser] = []

    async def connect(user: str, presence: bool = True, server: Prosody | None = None) -> XmppUser:
        u = XmppUser(server or prosody, user)
        await u.connect(presence)
        connected.append(u)
        return u

    yield connect
    for u in connected:
        await u.disconnect()


# -- the service against this server ------------------------------------------------------------


def configure(settings: Settings, server: Prosody, overrides: dict[str, Any] | None = None) -> Settings:
    """Point `settings` at `server` (no TLS), drop the per-JID interval (tests that need it set
    it), make admin@localhost an admin, apply `overrides` ({"auth.code_ttl": 1, ...})."""
    settings.xmpp = dataclasses.replace(
        settings.xmpp,
        jid=server.jid(SERVICE[0]),
        password=SERVICE[1],
        host=server.host,
        port=server.port,
        require_tls=False,
    )
    settings.auth.code_interval = 0
    settings.admins = [ADMIN]
    for key, value in (overrides or {}).items():
        section, name = key.split(".")
        setattr(getattr(settings, section), name, value)
    return settings


def configure_component(settings: Settings, server: Prosody, overrides: dict[str, Any] | None = None) -> Settings:
    """Attach the service's XEP-0363 component to `server` (upload.localhost), then `overrides`."""
    settings.xmpp.component = dataclasses.replace(
        settings.xmpp.component, jid=server.component_jid, secret=COMPONENT_SECRET, host=server.host, port=server.component_port
    )
    for key, value in (overrides or {}).items():
        section, name = key.split(".")
        setattr(getattr(settings, section), name, value)
    return settings


async def request_code(http: httpx.AsyncClient, jid: str, **fields: Any) -> httpx.Response:
    return await http.post(CODE_REQUEST, json={"jid": jid, **fields})


async def login_over_xmpp(http: httpx.AsyncClient, user: XmppUser, **fields: Any) -> dict[str, str]:
    """The whole login over XMPP for a connected test user; returns auth headers."""
    r = await request_code(http, user.jid)
    assert r.status_code == 201, r.text
    code, _ = await user.next_code()
    r = await http.post(AUTH, json={"jid": user.jid, "code": code, **fields})
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])
