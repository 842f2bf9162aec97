"""A private Prosody (Debian's `prosody` package) for the tests and the benchmark.

The server runs as a subprocess with a generated config and all its data in a temp dir, on free
loopback ports, without TLS. The config's core (paths, run_as_root, loopback ports for c2s and
external components, no s2s, plain logins) is shared; each user appends its own modules, hosts and
components. Readiness is this process's own log line "Activated service 'c2s' on
[127.0.0.1]:PORT", not just an open port: another Prosody on the machine could own the port.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"

# Prosody as root needs run_as_root (without it prosodyctl refuses the config and prosody hangs);
# s2s is autoloaded, so it is disabled explicitly; the empty certs dir keeps certmanager quiet.
CORE = """\
run_as_root = true
data_path = "{dir}/data"
certificates = "{dir}/certs"
pidfile = "{dir}/prosody.pid"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}

interfaces = {{ "{host}" }}
local_interfaces = {{ "{host}" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "{host}" }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}

authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class ProsodyProcess:
    """One Prosody process in `dir`; start() and stop() may be called again (same ports, same data)."""

    dir: Path
    port: int = field(default_factory=free_port)
    component_port: int = field(default_factory=free_port)
    host: str = HOST
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    @property
    def log(self) -> Path:
        return self.dir / "prosody.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    def write_config(self, rest: str) -> None:
        """The shared core, then `rest`: more global settings (modules_enabled, ...) first, then
        the VirtualHost and Component sections."""
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)
        core = CORE.format(dir=self.dir, host=self.host, port=self.port, component_port=self.component_port)
        self.config.write_text(core + "\n" + rest)

    def register(self, user: str, password: str, domain: str) -> None:
        """An account (works before the server starts)."""
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, domain, password],
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
        line = f"Activated service 'c2s' on [{self.host}]:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.process.returncode}: {self.log_since(offset)}")
            if line in self.log_since(offset):
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"prosody not ready on port {self.port}: {self.log_since(offset)}")

    def log_since(self, offset: int = 0) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def version(self) -> str:
        found = re.search(r"Prosody version (\S+)", self.log_since())
        return found.group(1) if found else "unknown"

    def stop(self, grace: float = 10) -> None:
        """SIGTERM (a clean shutdown takes about 1.5 s), SIGKILL after `grace` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
