"""The embedded evaluation database: SecantusDB run as a child process on a loopback port.

Used by `python server.py` when no mongodb.uri is configured, and by the test suite. It is a
separate program (GPL-2.0 beta software), started and stopped, never imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def executable() -> str:
    beside = Path(sys.executable).with_name("secantusd-py")
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found: install requirements-embedded.txt or set mongodb.uri")
    return found


class EmbeddedMongo:
    def __init__(self, data_dir: Path, timeout: float = 60, port: int = 0) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        self.port = port  # 0: a free one, then the one it got (a restart reuses it)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "secantusd.log"
        log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        offset = log.tell()
        self.process = subprocess.Popen(
            [executable(), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.data_dir / "wt")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe after fork
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                match = _LISTENING.search(f.read().decode("utf-8", "replace"))
            if match:
                self.port = int(match.group(1))
                return self.uri
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded database exited with {self.process.returncode}; see {log_path}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded database did not start in {self.timeout:.0f} s; see {log_path}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
