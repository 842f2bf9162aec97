"""One upload at a time: 20 MB (for the memory comparison) and 200 MB files, new content each."""

from __future__ import annotations

import time

from bench import machine
from bench.client import CommandCount, expect, upload_once
from bench.common import MB, progress
from bench.fixtures import check_stored, close_parts, unique_content
from bench.profiler import Profiler
from bench.rows import Figures, Row, commands
from bench.session import Session, User
from bench.stats import with_summary

NAME = "uploads"


async def one_upload(session: Session, user: User, size: int, verify: bool) -> tuple[dict, dict]:
    """Upload `size` bytes of new content; returns (the sample, the service's file object)."""
    parts = unique_content(session.large, size)
    rss, cpu = session.meters()
    try:
        async with CommandCount(session) as count:
            with rss, cpu:
                started = time.perf_counter()
                response = await upload_once(session, user, parts, size, f"large-{size // MB}MB.bin")
                seconds = time.perf_counter() - started
        body = check_stored(expect(response, 201, f"upload of {size} bytes"), size, parts, verify)
    finally:
        close_parts(parts)
    gb = size / 1e9
    sample = {
        "seconds": seconds,
        "mb_s": size / MB / seconds,
        "server_cpu_s": cpu.used["server"],
        "server_cpu_s_per_gb": cpu.used["server"] / gb,
        "client_cpu_s_per_gb": cpu.used["client"] / gb,
        "db_cpu_s": cpu.used["db"],
        "rss_baseline_mib": rss.baseline_mib,
        "rss_peak_mib": rss.peak_mib,
        "rss_growth_mib": rss.growth_mib,
        **count.figures(1),
    }
    return sample, body


async def measure(session: Session) -> dict:
    plan = session.plan
    user = await session.new_user("large")
    medium = [(await one_upload(session, user, plan.medium_mb * MB, verify=i == 0))[0] for i in range(plan.repeats_large)]
    progress(
        f"upload {plan.medium_mb} MB: " + ", ".join(f"{s['mb_s']:.0f} MB/s peak {s['rss_peak_mib']:.0f} MiB" for s in medium)
    )
    large = []
    with Profiler(session, "upload_large"):
        for i in range(plan.repeats_large):
            large.append((await one_upload(session, user, plan.large_mb * MB, verify=i == 0))[0])
            progress(
                f"upload {plan.large_mb} MB #{i + 1}: {large[-1]['mb_s']:.1f} MB/s, "
                f"{large[-1]['server_cpu_s_per_gb']:.2f} server CPU s/GB, peak RSS {large[-1]['rss_peak_mib']:.0f} MiB"
            )
    return {"upload_medium": with_summary(medium), "upload_large": with_summary(large)}


def rows(figures: Figures) -> list[Row]:
    up = figures.get("upload_large")
    if not up:
        return []
    m, plan = figures.machine, figures.plan
    peer_put = figures.peer_figure("large", "put_mb_s")
    floor = machine.hashing_s_per_gb(m)
    return [
        Row(
            f"upload {plan['large_mb']} MB, one file",
            up["median_mb_s"],
            "MB/s",
            "md5, one core",
            m["md5_mb_s"],
            peer_put,
            commands(up),
        ),
        Row(
            "  server CPU per GB uploaded",
            up["median_server_cpu_s_per_gb"],
            "CPU s/GB",
            "md5+sha256+sha1 of 1 GB",
            floor,
            note=f"client CPU {up['median_client_cpu_s_per_gb']:.2f} s/GB",
        ),
    ]


def memory_rows(figures: Figures) -> list[Row]:
    up, med, plan = figures.get("upload_large"), figures.get("upload_medium"), figures.plan
    if not up:
        return []
    found = [
        Row(
            f"peak server RSS during the {plan['large_mb']} MB upload",
            up["max_rss_peak_mib"],
            "MiB",
            peer=figures.peer_figure("large", "peak_rss_mib"),
            note=f"idle before: {up['median_rss_baseline_mib']:.0f} MiB",
        )
    ]
    if med:
        diff = up["max_rss_peak_mib"] - med["max_rss_peak_mib"]
        found.append(
            Row(
                f"peak RSS, {plan['medium_mb']} MB upload vs {plan['large_mb']} MB upload",
                diff,
                "MiB",
                note=f"{med['max_rss_peak_mib']:.0f} vs {up['max_rss_peak_mib']:.0f} MiB",
            )
        )
    return found
