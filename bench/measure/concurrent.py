"""8 uploads of 25 MB at once, each on its own connection: aggregate rate and memory growth."""

from __future__ import annotations

import asyncio
import time

from bench.client import CommandCount, expect, post_upload
from bench.common import MB, progress
from bench.fixtures import close_parts, unique_content
from bench.profiler import profiled
from bench.rows import Figures, Row, commands
from bench.session import Session, User
from bench.stats import with_summary

NAME = "concurrent"


async def one_round(session: Session, user: User, first: bool) -> dict:
    plan = session.plan
    size = plan.concurrent_mb * MB
    contents = [unique_content(session.part, size) for _ in range(plan.concurrent)]
    conns = [session.connection() for _ in range(plan.concurrent)]
    rss, cpu = session.meters()
    try:
        async with CommandCount(session) as count:
            with profiled(session, "upload_concurrent", first), rss, cpu:
                started = time.perf_counter()
                uploads = (
                    post_upload(conn, user, parts, size, f"part-{i}.bin")
                    for i, (conn, parts) in enumerate(zip(conns, contents, strict=True))
                )
                responses = await asyncio.gather(*uploads)
                seconds = time.perf_counter() - started
    finally:
        for conn, parts in zip(conns, contents, strict=True):
            conn.close()
            close_parts(parts)
    for response in responses:
        expect(response, 201, "concurrent upload")
    total = plan.concurrent * size
    return {
        "seconds": seconds,
        "aggregate_mb_s": total / MB / seconds,
        "server_cpu_s_per_gb": cpu.used["server"] / (total / 1e9),
        "client_cpu_s_per_gb": cpu.used["client"] / (total / 1e9),
        "rss_baseline_mib": rss.baseline_mib,
        "rss_peak_mib": rss.peak_mib,
        "rss_growth_mib": rss.growth_mib,
        **count.figures(plan.concurrent),
    }


async def measure(session: Session) -> dict:
    plan = session.plan
    user = await session.new_user("concurrent")
    samples = []
    for round_number in range(plan.repeats):
        samples.append(await one_round(session, user, round_number == 0))
        progress(
            f"upload {plan.concurrent} x {plan.concurrent_mb} MB: {samples[-1]['aggregate_mb_s']:.1f} MB/s aggregate, "
            f"RSS {samples[-1]['rss_baseline_mib']:.0f} -> {samples[-1]['rss_peak_mib']:.0f} MiB"
        )
    return {"upload_concurrent": with_summary(samples)}


def rows(figures: Figures) -> list[Row]:
    conc, plan = figures.get("upload_concurrent"), figures.plan
    if not conc:
        return []
    return [
        Row(
            f"upload {plan['concurrent']} × {plan['concurrent_mb']} MB concurrently, aggregate",
            conc["median_aggregate_mb_s"],
            "MB/s",
            "md5, one core",
            figures.machine["md5_mb_s"],
            figures.peer_figure("concurrent", "aggregate_mb_s"),
            commands(conc),
        )
    ]


def memory_rows(figures: Figures) -> list[Row]:
    conc, plan = figures.get("upload_concurrent"), figures.plan
    if not conc:
        return []
    return [
        Row(
            f"peak server RSS during {plan['concurrent']} × {plan['concurrent_mb']} MB",
            conc["max_rss_peak_mib"],
            "MiB",
            peer=figures.peer_figure("concurrent", "peak_rss_mib"),
        ),
        Row(
            f"  RSS growth during {plan['concurrent']} × {plan['concurrent_mb']} MB",
            conc["max_rss_growth_mib"],
            "MiB",
        ),
    ]
