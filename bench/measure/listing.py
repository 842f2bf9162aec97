"""GET files/ (page 1 and a deep page) and GET files/stats/ (plain and filtered) for an owner
with many files (bench/seed.py), 8 in flight."""

from __future__ import annotations

import time

from bench import seed
from bench.client import expect, get_once, run_pool
from bench.common import BenchError, progress
from bench.httpclient import Connection, Response
from bench.profiler import profiled
from bench.rows import Figures, Row, db_note
from bench.session import Session, User
from bench.stats import with_summary

NAME = "listing"
PER_PAGE = 50
LABELS = {
    "list_page1": "GET files/, page 1",
    "list_deep_page": "GET files/, page {page}",
    "stats": "GET files/stats/",
    "stats_filtered": "GET files/stats/?media_type=image",
}
TARGETS = {"list_page1": 1000, "stats": 1000}


def routes(files: int) -> dict[str, str]:
    pages = -(-files // PER_PAGE)
    return {
        "list_page1": "/api/v1/files/",
        "list_deep_page": f"/api/v1/files/?page={max(1, pages * 3 // 4)}",
        "stats": "/api/v1/files/stats/",
        "stats_filtered": "/api/v1/files/stats/?media_type=image",
    }


async def check(session: Session, key: str, route: str, user: User, seeded: dict) -> None:
    """The first answer reports exactly the seeded totals."""
    first = expect(await get_once(session, route, user), 200, route)
    if key.startswith("list") and first["total_objects"] != seeded["count"]:
        raise BenchError(f"{route}: total_objects {first['total_objects']}, expected {seeded['count']}")
    if key == "stats" and (first["total"]["count"], first["total"]["used"]) != (seeded["count"], seeded["used"]):
        raise BenchError(f"{route}: total {first['total']}, expected {seeded}")


async def measure_route(session: Session, key: str, route: str, user: User) -> dict:
    plan = session.plan

    async def one(conn: Connection, number: int) -> Response:
        response = await conn.request("GET", route, user.auth)
        if response.status != 200:
            raise BenchError(f"{route}: {response.status} {response.body[:300]!r}")
        return response

    samples = []
    for round_number in range(plan.repeats):
        with profiled(session, key, round_number == 0):
            samples.append(await run_pool(session, plan.read_in_flight, plan.list_requests, one, plan.list_seconds))
        progress(
            f"GET {route} ({plan.many_files} files): {samples[-1]['per_s']:.0f} req/s, p99 {samples[-1]['p99_ms']:.1f} ms, "
            f"db CPU {samples[-1]['db_cpu_s']:.1f} s of {samples[-1]['seconds']:.1f} s"
        )
    return with_summary(samples, route=route)


async def measure(session: Session) -> dict:
    plan = session.plan
    user = await session.new_user("many")
    started = time.perf_counter()
    seeded = await seed.many_files(session, user, plan.many_files)
    progress(f"inserted {plan.many_files} file documents in {time.perf_counter() - started:.1f} s")
    found = {}
    for key, route in routes(plan.many_files).items():
        await check(session, key, route, user, seeded)
        found[key] = await measure_route(session, key, route, user)
    return found


def rows(figures: Figures) -> list[Row]:
    plan = figures.plan
    found = []
    for key, label in LABELS.items():
        if not (item := figures.get(key)):
            continue
        page = item["route"].rpartition("=")[2]
        target = TARGETS.get(key)
        found.append(
            Row(
                f"{label.format(page=page)} ({plan['many_files']:,} files), {plan['read_in_flight']} in flight",
                item["median_per_s"],
                "requests/s",
                target=f"≥ {target}/s" if target else "",
                met=(item["median_per_s"] >= target) if target else None,
                note=f"p99 {item['median_p99_ms']:.1f} ms; " + db_note(item),
            )
        )
    return found


def memory_rows(figures: Figures) -> list[Row]:
    return []
