"""A throwaway ejabberd (Debian's `ejabberd` 23.01) for the component tests.

Everything lives in a temp dir (config, ejabberdctl config, Mnesia spool, logs) owned by the
`ejabberd` user, which ejabberdctl switches to; the node has a name of its own, the listeners,
Erlang distribution and epmd stay on 127.0.0.1, c2s and the component listener use free ports.
It starts in about three seconds.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.prosody import free_port
from tests.prosody import COMPONENT_SECRET, USERS

DOMAIN = "localhost"

CONFIG = """\
hosts: ["{domain}"]
loglevel: info
certfiles: []
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
  -
    port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "upload.{domain}":
        password: "{secret}"
auth_method: internal
auth_password_format: plain
s2s_access: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"""

CTL_CONFIG = """\
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
"""


@dataclass
class Ejabberd:
    dir: Path
    port: int = field(default_factory=free_port)
    component_port: int = field(default_factory=free_port)
    domain: str = DOMAIN
    host: str = "127.0.0.1"
    node: str = field(default_factory=lambda: f"gallerytest{secrets.token_hex(4)}@localhost")

    @property
    def component_jid(self) -> str:
        return f"upload.{self.domain}"

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        d = self.dir
        command = ["ejabberdctl", "--node", self.node, "--ctl-config", str(d / "ejabberdctl.cfg")]
        command += ["--config", str(d / "ejabberd.yml"), "--spool", str(d / "spool"), "--logs", str(d / "logs"), *args]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, cwd=d)

    def start(self, timeout: float = 60) -> None:
        d = self.dir
        (d / "spool").mkdir()
        (d / "logs").mkdir()
        (d / "ejabberd.yml").write_text(
            CONFIG.format(domain=self.domain, port=self.port, component_port=self.component_port, secret=COMPONENT_SECRET)
        )
        (d / "ejabberdctl.cfg").write_text(CTL_CONFIG)
        user = pwd.getpwnam("ejabberd")
        os.chmod(d, 0o755)
        for path in (d, *d.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.ctl("start")
        deadline = time.monotonic() + timeout
        while "is started" not in self.ctl("status").stdout:
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"ejabberd not started: {self.log()}")
            time.sleep(0.2)
        for name, password in USERS.items():
            result = self.ctl("register", name, self.domain, password)
            assert result.returncode == 0, result.stdout + result.stderr

    def log(self) -> str:
        path = self.dir / "logs" / "ejabberd.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.ctl("stop")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.ctl("status").returncode == 0:
            time.sleep(0.2)


@contextlib.contextmanager
def running_ejabberd() -> Iterator[Ejabberd]:
    if shutil.which("ejabberdctl") is None:
        pytest.fail("ejabberd is not installed: run bin/setup --dev")
    with tempfile.TemporaryDirectory(prefix="gallery-ejabberd-") as d:
        server = Ejabberd(Path(d))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def ejabberd() -> Iterator[Ejabberd]:
    with running_ejabberd() as server:
        yield server
