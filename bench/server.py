"""The service under test, started as a user would: `python server.py` with GALLERY_* variables.

Port 0 (the URL is read from its "gallery serving on URL" log line), its own temp storage dir,
and no mongodb.uri, so server.py starts the embedded database itself with its files in `tmp/db`
(`mongodb.embedded_path`); that database's port is read from its log
(`<embedded_path>/secantusd.log`, "listening on 127.0.0.1:PORT").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import procstat
from bench.common import MB, ROOT, BenchError
from bench.plan import Plan

START_TIMEOUT = 120
DATABASE = "gallery_bench"
_SERVING = re.compile(r"gallery serving on (\S+)")
_DB_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def service_env(tmp: Path, plan: Plan) -> dict[str, str]:
    """The environment: the caller's, without its GALLERY_* variables, plus the run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALLERY_")}
    env.update(
        GALLERY_SERVER_HOST="127.0.0.1",
        GALLERY_SERVER_PORT="0",
        GALLERY_STORAGE_PATH=str(tmp / "files"),
        GALLERY_MONGODB_EMBEDDED_PATH=str(tmp / "db"),
        GALLERY_MONGODB_DATABASE=DATABASE,
        GALLERY_LIMITS_MAX_FILE_SIZE=str((plan.large_mb + 10) * MB),
        GALLERY_LIMITS_UPLOADS_PER_WINDOW="100000000",
        GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER="64",
        GALLERY_LIMITS_CONCURRENT_UPLOADS="256",
        GALLERY_QUOTA_DEFAULT=str(10**13),
        PYTHONUNBUFFERED="1",
    )
    return env


class Server:
    """`python server.py`; the embedded database lives in `tmp/db`."""

    def __init__(self, tmp: Path, plan: Plan, **settings: str) -> None:
        """`settings`: more GALLERY_* variables, e.g. GALLERY_STORAGE_BACKEND="gridfs"."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.storage = tmp / "files"
        self.db_dir = tmp / "db"
        self.log_path = tmp / "server.log"
        self.env = service_env(tmp, plan) | settings
        self.processes = int(settings.get("GALLERY_SERVER_PROCESSES", "1"))
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.db_uri = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "server.py")],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = self._wait_serving().group(1)
        db_log = (self.db_dir / "secantusd.log").read_text(errors="replace")
        port = _DB_LISTENING.findall(db_log)[-1]
        self.db_uri = f"mongodb://127.0.0.1:{port}/?retryWrites=false&directConnection=true"

    def _wait_serving(self) -> re.Match:
        """The first "serving on" line, once every worker has logged one."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while len(found := list(_SERVING.finditer(self.log_text()))) < self.processes:
            if self.process.poll() is not None:
                raise BenchError(f"server.py exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"server.py did not serve within {START_TIMEOUT} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return found[0]

    def service_pids(self) -> tuple[int, ...]:
        """The processes that serve: server.py itself, or with several workers the supervisor's
        children other than the embedded database (the idle supervisor is left out)."""
        if self.processes <= 1:
            return (self.pid,)
        workers = tuple(pid for pid in procstat.children(self.pid) if "secantusd" not in procstat.cmdline(pid))
        if len(workers) != self.processes:
            raise BenchError(f"expected {self.processes} workers under pid {self.pid}, found {len(workers)}")
        return workers

    def db_pid(self) -> int:
        for pid in procstat.children(self.pid):
            if "secantusd" in procstat.cmdline(pid):
                return pid
        raise BenchError("the embedded database process was not found among the server's children")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
