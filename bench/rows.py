"""A table row, and what a measurement module builds its rows from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Row:
    name: str
    value: float | None
    unit: str
    limit_name: str = ""
    limit: float | None = None
    peer: float | None = None
    commands: float | None = None  # database commands per request
    note: str = ""


@dataclass
class Figures:
    """What a module's rows are built from: the run's results, its plan, the machine's limits
    and Prosody's figures (None without --peer)."""

    results: dict[str, Any]
    plan: dict[str, Any]
    machine: dict[str, Any]
    prosody: dict[str, Any] | None

    @classmethod
    def of(cls, results: dict[str, Any]) -> Figures:
        found = results.get("peer", {})
        tuned = found.get("tuned", {}) if found.get("available") else {}
        return cls(results, results["plan"], results["machine"], tuned if "large" in tuned else None)

    def get(self, key: str) -> dict | None:
        return self.results.get(key)

    def listing(self, files: int, key: str) -> dict | None:
        """A listing or stats result at `files` files (None when not measured)."""
        return (self.results.get("listing") or {}).get(str(files), {}).get(key)

    def peer_figure(self, group: str, key: str) -> float | None:
        return self.prosody[group][key] if self.prosody else None


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if 0 < abs(value) < 1:
        return f"{value:.2g}"  # a slow route's 0.043 requests/s is not 0.0
    return f"{value:.{digits}f}"


def commands(item: dict | None) -> float | None:
    """Database commands per request, median of the samples (None if the service does not count them)."""
    return item.get("median_db_commands_per_request") if item else None


def db_note(item: dict) -> str:
    """CPU per request in the server and in the embedded database (a pure-Python process): on 2
    cores, whichever nears 1 s of CPU per second bounds the rate."""
    requests = item["median_requests"] or 1
    server = item["median_server_cpu_s"] / requests * 1000
    db = item["median_db_cpu_s"] / requests * 1000
    busy = item["median_db_cpu_s"] / item["median_seconds"]
    return f"CPU per request: server {server:.1f} ms, DB {db:.1f} ms; DB busy {busy:.0%}"
