"""Downloads of a 200 MB file (uploaded first, not measured): whole, as 1 MB ranges on one
connection, and 304 revalidations 16 in flight."""

from __future__ import annotations

import asyncio
import time

from bench import httpclient, procstat
from bench.client import CommandCount, expect, media_path, run_pool, upload_once
from bench.common import MB, REQUEST_TIMEOUT, BenchError, progress
from bench.fixtures import close_parts, unique_content
from bench.httpclient import Connection, Response
from bench.profiler import Profiler, profiled
from bench.rows import Figures, Row, commands
from bench.session import Session
from bench.stats import with_summary

NAME = "downloads"


async def large_file(session: Session) -> tuple[str, int]:
    """A new file of plan.large_mb MB; returns (its download path, its size)."""
    user = await session.new_user("downloads")
    size = session.plan.large_mb * MB
    parts = unique_content(session.large, size)
    try:
        body = expect(await upload_once(session, user, parts, size, "download.bin"), 201, "upload to download")
    finally:
        close_parts(parts)
    return media_path(body["file"]), body["size"]


async def whole(session: Session, path: str, size: int) -> tuple[dict, str]:
    """One whole download; returns (the sample, the ETag)."""
    rss, cpu = session.meters()
    async with CommandCount(session) as count:
        with rss, cpu:
            started = time.perf_counter()
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response = await asyncio.to_thread(httpclient.get_discarding, *session.server.address, path)
            seconds = time.perf_counter() - started
    if response.status != 200 or response.length != size:
        raise BenchError(f"download: {response.status}, {response.length} of {size} bytes")
    sample = {
        "seconds": seconds,
        "mb_s": size / MB / seconds,
        "server_cpu_s_per_gb": cpu.used["server"] / (size / 1e9),
        "client_cpu_s_per_gb": cpu.used["client"] / (size / 1e9),
        "rss_peak_mib": rss.peak_mib,
        **count.figures(1),
    }
    progress(f"download {size // MB} MB: {sample['mb_s']:.0f} MB/s")
    return sample, response.headers["etag"]


async def ranges(session: Session, path: str, size: int) -> dict:
    """The file as consecutive 1 MB ranges on one keep-alive connection."""
    count = size // MB
    conn = session.connection()
    cpu = procstat.CpuMeter(server=session.server.pid)
    try:
        async with CommandCount(session) as commands_used:
            with cpu:
                started = time.perf_counter()
                for i in range(count):
                    headers = {"Range": f"bytes={i * MB}-{(i + 1) * MB - 1}"}
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        response = await conn.request("GET", path, headers, keep_body=False)
                    if response.status != 206 or response.length != MB:
                        raise BenchError(f"range download: {response.status}, {response.length} bytes")
                seconds = time.perf_counter() - started
    finally:
        conn.close()
    progress(f"download as {count} x 1 MB ranges: {count * MB / MB / seconds:.0f} MB/s")
    return {
        "seconds": seconds,
        "mb_s": count * MB / MB / seconds,
        "requests_per_s": count / seconds,
        "server_cpu_s_per_gb": cpu.used["server"] / (count * MB / 1e9),
        **commands_used.figures(count),
    }


async def revalidations(session: Session, path: str, etag: str, first: bool) -> dict:
    async def revalidate(conn: Connection, number: int) -> Response:
        response = await conn.request("GET", path, {"If-None-Match": etag})
        if response.status != 304:
            raise BenchError(f"revalidation: {response.status}")
        return response

    with profiled(session, "revalidate_304", first):
        sample = await run_pool(session, session.plan.small_in_flight, session.plan.revalidations, revalidate)
    progress(f"304 revalidations: {sample['per_s']:.0f}/s, p99 {sample['p99_ms']:.1f} ms")
    return sample


async def measure(session: Session) -> dict:
    plan = session.plan
    path, size = await large_file(session)
    whole_samples, etag = [], ""
    with Profiler(session, "download_whole"):
        for _ in range(plan.repeats_large):
            sample, etag = await whole(session, path, size)
            whole_samples.append(sample)
    with Profiler(session, "download_ranges"):
        range_samples = [await ranges(session, path, size) for _ in range(plan.repeats)]
    revalidate_samples = [await revalidations(session, path, etag, i == 0) for i in range(plan.repeats)]
    return {
        "download_whole": with_summary(whole_samples),
        "download_ranges": with_summary(range_samples),
        "revalidate_304": with_summary(revalidate_samples),
    }


def rows(figures: Figures) -> list[Row]:
    plan, tcp = figures.plan, figures.machine["loopback_tcp_mb_s"]
    found = []
    if dl := figures.get("download_whole"):
        note = f"server CPU {dl['median_server_cpu_s_per_gb']:.2f} s/GB"
        peer_get = figures.peer_figure("large", "get_mb_s")
        label = f"download {plan['large_mb']} MB, whole"
        found.append(Row(label, dl["median_mb_s"], "MB/s", "loopback TCP copy", tcp, peer_get, commands(dl), note))
    if rg := figures.get("download_ranges"):
        note = f"{rg['median_requests_per_s']:.0f} requests/s"
        label = f"download {plan['large_mb']} MB as 1 MB ranges, one connection"
        found.append(Row(label, rg["median_mb_s"], "MB/s", "loopback TCP copy", tcp, commands=commands(rg), note=note))
    if rv := figures.get("revalidate_304"):
        note = f"p99 {rv['median_p99_ms']:.1f} ms"
        label = f"304 revalidations, {plan['small_in_flight']} in flight"
        found.append(Row(label, rv["median_per_s"], "requests/s", commands=commands(rv), note=note))
    return found


def memory_rows(figures: Figures) -> list[Row]:
    return []
