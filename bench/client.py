"""Requests against the service: one upload, one GET, and a pool of keep-alive connections
that measures a request rate with its latency percentiles and CPU."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from bench.common import REQUEST_TIMEOUT, BenchError
from bench.httpclient import Connection, FilePart, Response, multipart
from bench.session import Session, User
from bench.stats import percentile

UPLOAD_ROUTE = "/api/v1/files/upload/"
COMMANDS_METRIC = "gallery_db_commands_total{"


def media_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def post_upload(
    conn: Connection,
    user: User,
    content: list[bytes | FilePart],
    size: int,
    name: str,
    route: str = UPLOAD_ROUTE,
    part_type: str = "application/octet-stream",
) -> Response:
    headers, body = multipart(content, size, name, part_type=part_type)
    headers.update(user.auth)
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await conn.request("POST", route, headers, body)


async def upload_once(session: Session, user: User, content: list[bytes | FilePart], size: int, name: str) -> Response:
    """One upload on a connection of its own."""
    conn = session.connection()
    try:
        return await post_upload(conn, user, content, size, name)
    finally:
        conn.close()


def expect(response: Response, status: int, what: str) -> dict:
    if response.status != status:
        raise BenchError(f"{what}: expected {status}, got {response.status}: {response.body[:400]!r}")
    return json.loads(response.body) if response.body else {}


async def get_once(session: Session, route: str, user: User | None = None) -> Response:
    """One GET on a connection of its own."""
    conn = session.connection()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await conn.request("GET", route, user.auth if user else {})
    finally:
        conn.close()


async def db_commands_by_name(session: Session) -> dict[str, float] | None:
    """The database commands the service has sent so far, by command name (from /metrics),
    None if it does not say."""
    response = await get_once(session, "/metrics")
    found: dict[str, float] = {}
    for line in response.body.decode().splitlines():
        if line.startswith(COMMANDS_METRIC):
            labels, _, value = line.rpartition(" ")
            name = labels.partition('command="')[2].partition('"')[0]
            found[name] = found.get(name, 0.0) + float(value)
    return found if response.status == 200 and found else None


async def db_commands(session: Session) -> float | None:
    """The database commands the service has sent so far (from /metrics), None if it does not say."""
    found = await db_commands_by_name(session)
    return sum(found.values()) if found is not None else None


class CommandCount:
    """The service's database commands while the `async with` block runs (read from /metrics
    before and after, so one request more on each side, which sends none), in all and by name."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.before: dict[str, float] | None = None
        self.used: float | None = None
        self.by_name: dict[str, float] = {}

    async def __aenter__(self) -> CommandCount:
        self.before = await db_commands_by_name(self.session)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        after = await db_commands_by_name(self.session)
        if after is None or self.before is None:
            self.used = None
            return
        before = self.before
        self.by_name = {name: count - before.get(name, 0.0) for name, count in after.items() if count != before.get(name)}
        self.used = sum(self.by_name.values())

    def figures(self, requests: int) -> dict[str, Any]:
        """{"db_commands", "db_commands_per_request", "db_commands_by_name"} (the last per
        request), or nothing if the service does not count."""
        if self.used is None:
            return {}
        per = max(requests, 1)
        return {
            "db_commands": self.used,
            "db_commands_per_request": self.used / per,
            "db_commands_by_name": {name: count / per for name, count in sorted(self.by_name.items())},
        }


async def run_pool(
    session: Session,
    in_flight: int,
    count: int,
    one: Callable[[Connection, int], Awaitable[Response]],
    max_seconds: float | None = None,
) -> dict:
    """`count` requests (or as many as fit in max_seconds), `in_flight` keep-alive connections
    each doing one at a time. Returns rate and latency percentiles."""
    latencies: list[float] = []
    numbers = iter(range(count))

    async def worker() -> None:
        conn = session.connection()
        try:
            for number in numbers:
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    return
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    response = await one(conn, number)
                latencies.append(response.seconds)
        finally:
            conn.close()

    rss, cpu = session.meters()
    async with CommandCount(session) as commands:
        started = time.perf_counter()
        with rss, cpu:
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": wall,
        "per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "server_cpu_s": cpu.used["server"],
        "server_system_cpu_s": cpu.used["server_system"],
        "db_cpu_s": cpu.used["db"],
        "client_cpu_s": cpu.used["client"],
        "rss_peak_mib": rss.peak_mib,
        "in_flight": in_flight,
        **commands.figures(len(latencies)),
    }
