"""GET files/slot/ for content the caller already has: 100 files uploaded first, then asked for
in turn, by sha256 and by md5 alternately; every answer is a new file (no upload)."""

from __future__ import annotations

import hashlib
import os

from bench.client import expect, post_upload, run_pool
from bench.common import BenchError, progress
from bench.httpclient import Connection, Response
from bench.profiler import profiled
from bench.rows import Figures, Row, commands, db_note
from bench.session import Session, User
from bench.stats import with_summary

NAME = "dedup"
CONTENTS = 100


async def upload_contents(session: Session, user: User) -> list[str]:
    """CONTENTS new files of the user's; returns the slot query naming each (sha256 or md5)."""
    size = session.plan.small_size
    payloads = [os.urandom(size) for _ in range(CONTENTS)]

    async def upload_one(conn: Connection, number: int) -> Response:
        response = await post_upload(conn, user, [payloads[number]], size, f"have-{number}.bin")
        expect(response, 201, "upload")
        return response

    await run_pool(session, session.plan.small_in_flight, CONTENTS, upload_one)
    return [
        f"hash={hashlib.sha256(p).hexdigest() if i % 2 == 0 else hashlib.md5(p, usedforsecurity=False).hexdigest()}&size={len(p)}"
        for i, p in enumerate(payloads)
    ]


async def measure(session: Session) -> dict:
    plan = session.plan
    user = await session.new_user("dedup")
    queries = await upload_contents(session, user)

    async def one(conn: Connection, number: int) -> Response:
        route = f"/api/v1/files/slot/?{queries[number % CONTENTS]}&name=dup-{number}.bin"
        response = await conn.request("GET", route, user.auth)
        if response.status != 200 or b'"slot_id"' not in response.body:
            raise BenchError(f"slot dedup: {response.status} {response.body[:300]!r}")
        return response

    samples = []
    for round_number in range(plan.repeats):
        with profiled(session, "slot_dedup", round_number == 0):
            samples.append(await run_pool(session, plan.small_in_flight, plan.dedup_count, one, plan.dedup_seconds))
        progress(f"slot dedup hits: {samples[-1]['per_s']:.0f}/s, p99 {samples[-1]['p99_ms']:.1f} ms")
    return {"slot_dedup": with_summary(samples)}


def rows(figures: Figures) -> list[Row]:
    dedup = figures.get("slot_dedup")
    if not dedup:
        return []
    return [
        Row(
            "slot dedup hits (a file made without an upload)",
            dedup["median_per_s"],
            "requests/s",
            peer=figures.peer_figure("small", "slots_per_s"),
            commands=commands(dedup),
            note=db_note(dedup) + "; Prosody: XMPP slot requests/s, no dedup",
        )
    ]


def memory_rows(figures: Figures) -> list[Row]:
    return []
