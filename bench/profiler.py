"""--profile: py-spy recording the server and the embedded database while a measurement runs.

Collapsed stacks go to <out-dir>/profiles/<measurement>.<server|server-gil|db>.txt, and the
hottest functions of each are printed with the progress."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import progress
from bench.session import Session

# server: every thread (the hashing threads too, and threads waiting for the GIL or in fsync);
# server-gil: only the thread holding the GIL, i.e. where Python's CPU goes
ROLES = {"server": ["--threads"], "server-gil": ["--gil"], "db": ["--gil"]}
SERVICE_CODE = re.compile(r"\((handlers|services|models|storage)/|secantus/commands\.py")


def profiled(session: Session, name: str, first: bool = True) -> contextlib.AbstractContextManager:
    """A Profiler for the first round of a measurement, nothing for the others."""
    return Profiler(session, name) if first else contextlib.nullcontext()


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Profiler:
    def __init__(self, session: Session, name: str) -> None:
        self.session, self.name = session, name
        self.processes: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> Profiler:
        if self.session.profile_dir is None:
            return self
        spy = py_spy()
        if spy is None:
            progress("py-spy not found: pip install -r requirements-dev.txt; not profiling")
            self.session.profile_dir = None
            return self
        pids = {"server": self.session.server.pid, "server-gil": self.session.server.pid, "db": self.session.db_pid}
        for role, flags in ROLES.items():
            out = self.session.profile_dir / f"{self.name}.{role}.txt"
            command = [spy, "record", "--pid", str(pids[role]), "--rate", "200", "--format", "raw", "--output", str(out)]
            command += ["--nonblocking", *flags]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.processes[role] = (process, out)
        time.sleep(0.5)  # let them attach
        return self

    def __exit__(self, *exc_info: object) -> None:
        for role, (process, out) in self.processes.items():
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                continue
            if out.exists():
                progress(f"profile {self.name} ({role}): {out}\n" + summarise_profile(out))
            else:
                progress(f"profile {self.name} ({role}): py-spy wrote nothing: {err.decode(errors='replace')[-400:]}")


def sample_counts(path: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """(total, self, inclusive) sample counts per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + count
    return total, own, inclusive


def summarise_profile(path: Path, top: int = 12) -> str:
    """The hottest functions by self time, then the service's own functions (and the database's
    command handlers) by inclusive time."""
    total, own, inclusive = sample_counts(path)
    lines = [f"  {total} samples; self time:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    lines.append("  inclusive time (service code, database commands):")
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if SERVICE_CODE.search(frame) and len(lines) < 2 * top + 3:
            lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)
