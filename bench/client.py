"""Requests against the service: one upload, one GET, and a pool of keep-alive connections
that measures a request rate with its latency percentiles and CPU."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from bench.common import REQUEST_TIMEOUT, BenchError
from bench.httpclient import Connection, FilePart, Response, multipart
from bench.session import Session, User
from bench.stats import percentile

UPLOAD_ROUTE = "/api/v1/files/upload/"


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
    started = time.perf_counter()

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
    }
