"""What /proc says about a process: CPU seconds, resident memory, and a 50 ms RSS sampler."""

from __future__ import annotations

import os
import threading
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
RSS_INTERVAL_S = 0.05


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of all the process's threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # fields 14 and 15 of stat(5)


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def total_rss_mib(pids: tuple[int, ...]) -> float:
    return sum(rss_mib(pid) for pid in pids)


class RssSampler:
    """Samples VmRSS every 50 ms in a thread while the `with` block runs; keeps the first value
    (the baseline) and the peak. With several pids (a supervisor's workers) it samples their sum
    (pages the workers share since the fork are counted in each)."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.baseline_mib = total_rss_mib(pids)
        self.peak_mib = self.baseline_mib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, total_rss_mib(self.pids))

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.baseline_mib

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.peak_mib = max(self.peak_mib, total_rss_mib(self.pids))


def total_cpu_times(pids: int | tuple[int, ...]) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, or summed over several."""
    times = [cpu_times(pid) for pid in ((pids,) if isinstance(pids, int) else pids)]
    return sum(user for user, _ in times), sum(system for _, system in times)


class CpuMeter:
    """CPU seconds used by some processes (and by this one) while the `with` block runs; a name
    may stand for several processes (a supervisor's workers), whose CPU is summed."""

    def __init__(self, **pids: int | tuple[int, ...]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {name: total_cpu_times(pid) for name, pid in self.pids.items()}
        self._client = sum(os.times()[:2])
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, pid in self.pids.items():
            user, system = total_cpu_times(pid)
            self.used[name] = user + system - sum(self._start[name])
            self.used[f"{name}_system"] = system - self._start[name][1]
        self.used["client"] = sum(os.times()[:2]) - self._client
