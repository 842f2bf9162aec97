"""Many 4 KiB uploads, 16 in flight on keep-alive connections: uploads per second and latency."""

from __future__ import annotations

import os

from bench.client import expect, post_upload, run_pool
from bench.common import progress
from bench.httpclient import Connection, Response
from bench.profiler import profiled
from bench.rows import Figures, Row, commands, db_note
from bench.session import Session, User
from bench.stats import with_summary

NAME = "small"


async def one_round(session: Session, user: User, first: bool) -> dict:
    plan = session.plan
    payloads = [os.urandom(plan.small_size) for _ in range(plan.small_count)]

    async def one(conn: Connection, number: int) -> Response:
        response = await post_upload(conn, user, [payloads[number]], plan.small_size, f"small-{number}.bin")
        if response.status != 201:
            expect(response, 201, "small upload")
        return response

    with profiled(session, "upload_small", first):
        return await run_pool(session, plan.small_in_flight, plan.small_count, one)


async def measure(session: Session) -> dict:
    plan = session.plan
    user = await session.new_user("small")
    samples = []
    for round_number in range(plan.repeats):
        samples.append(await one_round(session, user, round_number == 0))
        progress(
            f"{plan.small_count} x {plan.small_size} B uploads: {samples[-1]['per_s']:.0f}/s, "
            f"p50 {samples[-1]['p50_ms']:.1f} ms, p99 {samples[-1]['p99_ms']:.1f} ms"
        )
    return {"upload_small": with_summary(samples)}


def rows(figures: Figures) -> list[Row]:
    small, plan = figures.get("upload_small"), figures.plan
    if not small:
        return []
    return [
        Row(
            f"{plan['small_count']} uploads of 4 KiB, {plan['small_in_flight']} in flight",
            small["median_per_s"],
            "uploads/s",
            "durable 4 KiB writes/s",
            figures.machine["durable_small_writes_per_s"],
            figures.peer_figure("small", "uploads_per_s_slot_excluded"),
            commands(small),
            db_note(small) + "; Prosody: PUT on a slot fetched earlier",
        ),
        Row("  4 KiB upload latency p50", small["median_p50_ms"], "ms"),
        Row("  4 KiB upload latency p99", small["median_p99_ms"], "ms"),
    ]


def memory_rows(figures: Figures) -> list[Row]:
    return []
