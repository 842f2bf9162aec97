"""A throwaway Prosody for the tests (Debian's `prosody` package), and slixmpp test users.

The server runs as a subprocess with a generated config and all its data in a temp dir, on a free
loopback port, without TLS (the service is configured with `xmpp.require_tls: false`). Readiness is
this process's own log line "Activated service 'c2s' on [127.0.0.1]:PORT", not just an open port:
another Prosody on the machine could own the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from slixmpp import JID, ClientXMPP, Iq, Message

from settings import Settings
from tests.helpers import bearer, stop_process

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

CONFIG = """\
run_as_root = true
data_path = "{dir}/data"
certificates = "{dir}/certs"
pidfile = "{dir}/prosody.pid"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}

interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
plugin_paths = {{ "{plugins}" }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "gallery_discovery" }}
gallery_url = "{gallery_url}"
modules_disabled = {{ "s2s", "s2s_auth_certs" }}

authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

VirtualHost "{domain}"

VirtualHost "{other_domain}"

Component "upload.{domain}"
    component_secret = "{component_secret}"
    name = "Gallery"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prosody:
    """One Prosody process; start() and stop() may be called again (same port, same data)."""

    dir: Path
    port: int = field(default_factory=free_port)
    component_port: int = field(default_factory=free_port)
    domain: str = DOMAIN
    host: str = "127.0.0.1"
    gallery_url: str = GALLERY_URL
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    @property
    def log(self) -> Path:
        return self.dir / "prosody.log"

    def prepare(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)
        self.config.write_text(
            CONFIG.format(
                dir=self.dir,
                port=self.port,
                domain=self.domain,
                plugins=PLUGINS,
                gallery_url=self.gallery_url,
                component_port=self.component_port,
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
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, domain or self.domain, password],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self, timeout: float = 15) -> None:
        assert self.process is None, "already running"
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                ["prosody", "-F", "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready(offset, timeout)

    def _wait_ready(self, offset: int, timeout: float) -> None:
        assert self.process is not None
        line = f"Activated service 'c2s' on [127.0.0.1]:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.process.returncode}: {self._log_since(offset)}")
            if line in self._log_since(offset):
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"prosody not ready on port {self.port}: {self._log_since(offset)}")

    def _log_since(self, offset: int) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, grace=10)

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
