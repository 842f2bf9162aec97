"""GET files/ (page 1, the middle page and the last page, default order), GET files/stats/
(plain, by media type, by date range) and GET files/percent/10/ (page 1 of the oldest files
reaching 10 % of the space) for an owner with many files, at each size of plan.files
(--files): one owner, seeded straight into the database (bench/seed.py) up to each size in turn."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable

from bench import seed
from bench.client import run_pool
from bench.common import BenchError, progress
from bench.httpclient import Connection, Response
from bench.profiler import profiled
from bench.rows import Figures, Row, commands, db_note
from bench.session import Session, User
from bench.stats import with_summary

NAME = "listing"
PER_PAGE = 50  # the service's default page size
LABELS = {
    "list_first": "GET files/, page 1",
    "list_middle": "GET files/, middle page {page}",
    "list_last": "GET files/, last page {page}",
    "stats": "GET files/stats/",
    "stats_media_type": "GET files/stats/?media_type=image",
    "stats_dates": "GET files/stats/, a 90-day range",
    "percent": "GET files/percent/10/, page 1",
}
LIST_KEYS = ("list_first", "list_middle", "list_last")
PERCENT_KEYS = ("percent",)
STATS_KEYS = ("stats", "stats_media_type", "stats_dates")


def date_range(today: dt.date) -> str:
    """A 90-day range inside the seeded year: from 180 to 91 days ago."""
    return f"date_gte={today - dt.timedelta(days=180)}&date_lte={today - dt.timedelta(days=91)}"


def routes(files: int) -> dict[str, str]:
    pages = max(1, -(-files // PER_PAGE))
    return {
        "list_first": "/api/v1/files/",
        "list_middle": f"/api/v1/files/?page={(pages + 1) // 2}",
        "list_last": f"/api/v1/files/?page={pages}",
        "stats": "/api/v1/files/stats/",
        "stats_media_type": "/api/v1/files/stats/?media_type=image",
        "stats_dates": f"/api/v1/files/stats/?{date_range(dt.datetime.now(dt.UTC).date())}",
        "percent": "/api/v1/files/percent/10/",
    }


def wrong_totals(key: str, answer: dict, seeded: dict) -> str | None:
    """What in the first answer disagrees with the seeded files (None if nothing)."""
    if key in LIST_KEYS and answer["total_objects"] != seeded["count"]:
        return f"total_objects {answer['total_objects']}, expected {seeded['count']}"
    if key in LIST_KEYS and not answer["items"]:
        return "no items"
    if key == "stats" and (answer["total"]["count"], answer["total"]["used"]) != (seeded["count"], seeded["used"]):
        return f"total {answer['total']}, expected {seeded}"
    if key == "stats_media_type" and answer["total"]["count"] != seeded["images"]:
        return f"total {answer['total']}, expected {seeded['images']} images"
    if key == "percent" and not 0 < answer["total_objects"] < seeded["count"]:
        return f"total_objects {answer['total_objects']}, expected some of the {seeded['count']} files"
    if key == "stats_dates" and not 0 < answer["total"]["count"] < seeded["count"]:
        return f"total {answer['total']}, expected some of the {seeded['count']} files"
    return None


def requester(route: str, user: User, first: list[Response]) -> Callable[[Connection, int], Awaitable[Response]]:
    """One GET of `route`; the first answer is kept in `first` (for the totals check)."""

    async def one(conn: Connection, number: int) -> Response:
        response = await conn.request("GET", route, user.auth)
        if response.status != 200:
            raise BenchError(f"{route}: {response.status} {response.body[:300]!r}")
        if not first:
            first.append(response)
        return response

    return one


def in_flight_for(session: Session, seconds: float) -> int:
    """Connections for a route whose lone request took `seconds`: fewer for a slow route, so the
    requests still running when a round's time is up finish within about that time again."""
    return max(1, min(session.plan.read_in_flight, int(session.plan.list_seconds / max(seconds, 1e-3))))


async def measure_route(session: Session, key: str, route: str, user: User, seeded: dict) -> dict:
    """A lone request first (checked against the seeded files); when it took more than half a
    round's time it is the route's only sample, else rounds of plan.list_seconds follow."""
    plan, first = session.plan, []
    one = requester(route, user, first)
    lone = await run_pool(session, 1, 1, one)
    if wrong := wrong_totals(key, json.loads(first[0].body), seeded):
        raise BenchError(f"{route}: {wrong}")
    samples, in_flight = [lone], in_flight_for(session, lone["seconds"])
    if lone["seconds"] <= plan.list_seconds / 2:
        rounds = plan.list_repeats if in_flight == plan.read_in_flight else 1
        samples = []
        for round_number in range(rounds):
            with profiled(session, key, round_number == 0):
                samples.append(await run_pool(session, in_flight, plan.list_requests, one, plan.list_seconds))
    progress(
        f"GET {route}: {samples[-1]['per_s']:.1f} req/s ({samples[-1]['in_flight']} in flight), "
        f"p99 {samples[-1]['p99_ms']:.1f} ms, db CPU {samples[-1]['db_cpu_s']:.1f} s of {samples[-1]['seconds']:.1f} s"
    )
    return with_summary(samples, route=route)


async def measure_files(session: Session, user: User, seeded: dict) -> dict:
    """Every route for an owner with `seeded["count"]` files."""
    found: dict = {"files": seeded["count"], "seeded": seeded}
    for key, route in routes(seeded["count"]).items():
        found[key] = await measure_route(session, key, route, user, seeded)
    return found


async def measure(session: Session) -> dict:
    """One owner, grown to each size of plan.files in turn (smallest first) and measured there."""
    user = await session.new_user("many")
    seeded, found = {"count": 0, "used": 0, "images": 0}, {}
    for files in sorted(set(session.plan.files)):
        started = time.perf_counter()
        seeded = await seed.grow(session, user, seeded, files)
        seconds = time.perf_counter() - started
        progress(f"{files} files for one owner ready in {seconds:.1f} s")
        found[str(files)] = {"seed_seconds": seconds} | await measure_files(session, user, seeded)
    return {"listing": found}


def rows(figures: Figures) -> list[Row]:
    found = []
    for files in figures.plan["files"]:
        for key, label in LABELS.items():
            if not (item := figures.listing(files, key)):
                continue
            page = item["route"].rpartition("page=")[2]
            in_flight = item.get("median_in_flight", figures.plan["read_in_flight"])
            found.append(
                Row(
                    f"{label.format(page=page)} ({files:,} files), {in_flight:.0f} in flight",
                    item["median_per_s"],
                    "requests/s",
                    commands=commands(item),
                    note=f"p99 {item['median_p99_ms']:.1f} ms; " + db_note(item),
                )
            )
    return found


def memory_rows(figures: Figures) -> list[Row]:
    return []
