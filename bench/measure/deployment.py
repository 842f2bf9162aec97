"""How a deployment's choices change the figures, each beside its baseline from this module's own
servers, started back to back (not the run's main service, whose database earlier measurements
have filled):

- GridFS vs the local store: one file of plan.deployment_mb MB (200; --quick 50) uploaded and
  downloaded whole, MB/s and peak server RSS, on a service with `GALLERY_STORAGE_BACKEND=gridfs`
  and on one with the local store;
- 2 workers vs 1: 4 KiB uploads (16 in flight) and GET files/ page 1 for an owner of
  plan.deployment_files files, on a service with `GALLERY_SERVER_PROCESSES=2` and on one with 1.
  With 2 workers the server's CPU and RSS are the sums over the supervisor's workers.

Each service is `python server.py` with its own embedded database and storage dir (bench/server.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from bench import own, seed
from bench.client import expect, media_path, run_pool, upload_once
from bench.common import MB, BenchError, progress
from bench.fixtures import close_parts, unique_content
from bench.measure import downloads, listing, small, uploads
from bench.rows import Figures, Row, commands
from bench.session import Session
from bench.stats import with_summary

NAME = "deployment"
CONFIGS = {
    "gridfs": {"GALLERY_STORAGE_BACKEND": "gridfs"},
    "local": {},  # the local store and 1 worker: the baseline of both comparisons
    "workers_2": {"GALLERY_SERVER_PROCESSES": "2"},
}


async def with_service(session: Session, name: str, measure: Callable[[Session], Awaitable[dict]]) -> dict:
    """Start `python server.py` with configuration `name`, run `measure` on it, stop it."""
    return await own.with_service(session, f"deployment-{name}", CONFIGS[name], measure)


async def storage_figures(session: Session) -> dict:
    """Uploads and whole downloads of plan.deployment_mb MB, new content each upload."""
    plan = session.plan
    size = plan.deployment_mb * MB
    user = await session.new_user("deployment-storage")
    up = [(await uploads.one_upload(session, user, size, verify=i == 0))[0] for i in range(plan.repeats)]
    parts = unique_content(session.large, size)
    try:
        body = expect(await upload_once(session, user, parts, size, "deployment.bin"), 201, "upload to download")
    finally:
        close_parts(parts)
    down = [(await downloads.whole(session, media_path(body["file"]), size))[0] for _ in range(plan.repeats)]
    progress(
        f"upload {plan.deployment_mb} MB: {up[-1]['mb_s']:.1f} MB/s, peak RSS {max(s['rss_peak_mib'] for s in up):.0f} MiB; "
        f"download {down[-1]['mb_s']:.0f} MB/s"
    )
    return {"upload": with_summary(up), "download": with_summary(down)}


async def workers_figures(session: Session) -> dict:
    """4 KiB uploads, 16 in flight, then GET files/ page 1 for an owner of plan.deployment_files files:
    one round of each (the `small` and `listing` measurements repeat theirs)."""
    plan = session.plan
    uploader = await session.new_user("deployment-small")
    up = [await small.one_round(session, uploader, False)]  # one round: the full run stays within its time
    progress(f"{plan.small_count} x 4 KiB uploads: {up[-1]['per_s']:.0f}/s, p99 {up[-1]['p99_ms']:.0f} ms")
    owner = await session.new_user("deployment-many")
    seeded = await seed.grow(session, owner, {"count": 0, "used": 0, "images": 0}, plan.deployment_files)
    first: list = []
    route = listing.routes(plan.deployment_files)["list_first"]
    one = listing.requester(route, owner, first)
    await run_pool(session, 1, 1, one)  # the first request of its kind, and the totals check
    if wrong := listing.wrong_totals("list_first", json.loads(first[0].body), seeded):
        raise BenchError(f"{route}: {wrong}")
    pages = [await run_pool(session, plan.read_in_flight, plan.list_requests, one, plan.list_seconds)]
    progress(f"GET {route} ({plan.deployment_files} files): {pages[-1]['per_s']:.1f} req/s")
    return {"upload_small": with_summary(up), "list_first": with_summary(pages, route=route)}


async def local_figures(session: Session) -> dict:
    """The baseline: the storage figures (right after GridFS's), then 1 worker's (right before 2 workers')."""
    return await storage_figures(session) | await workers_figures(session)


async def measure(session: Session) -> dict:
    """Three services in turn: GridFS, the local store with 1 worker, 2 workers."""
    found = {
        "gridfs": await with_service(session, "gridfs", storage_figures),
        "local": await with_service(session, "local", local_figures),
        "workers_2": await with_service(session, "workers_2", workers_figures),
    }
    found["plan"] = {"mb": session.plan.deployment_mb, "files": session.plan.deployment_files}
    return {"deployment": found}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "–"


def _pair(figures: Figures, name: str, base: str, key: str) -> tuple[dict, dict] | None:
    """(the result `key` of configuration `name`, the same of `base`), None unless both were measured."""
    found = figures.get("deployment") or {}
    if not (item := found.get(name, {}).get(key)) or not (base_item := found.get(base, {}).get(key)):
        return None
    return item, base_item


def rows(figures: Figures) -> list[Row]:
    found = figures.get("deployment")
    if not found:
        return []
    mb, files, count = found["plan"]["mb"], found["plan"]["files"], figures.plan["small_count"]
    storage, workers = ("GridFS", "local store", "GridFS ÷ local"), ("2 workers", "1 worker", "2 workers ÷ 1")
    speeds = (
        ("gridfs", "upload", "mb_s", f"upload {mb} MB, one file", "MB/s", storage),
        ("gridfs", "download", "mb_s", f"download {mb} MB, whole", "MB/s", storage),
        ("workers_2", "upload_small", "per_s", f"{count} uploads of 4 KiB, 16 in flight", "uploads/s", workers),
        ("workers_2", "list_first", "per_s", f"GET files/, page 1 ({files:,} files), 8 in flight", "requests/s", workers),
    )
    out = []
    for name, key, field, label, unit, (what, base_what, ratio_name) in speeds:
        if not (pair := _pair(figures, name, "local", key)):
            continue
        item, base_item = pair
        value, base_value = item[f"median_{field}"], base_item[f"median_{field}"]
        note = f"{ratio_name}: {_ratio(value, base_value)}"
        if "median_p99_ms" in item:
            note += f"; p99 {item['median_p99_ms']:.0f} vs {base_item['median_p99_ms']:.0f} ms"
        if "median_server_cpu_s_per_gb" in item:
            cpu, base_cpu = item["median_server_cpu_s_per_gb"], base_item["median_server_cpu_s_per_gb"]
            note += f"; server CPU {cpu:.2f} vs {base_cpu:.2f} s/GB"
        out.append(Row(f"deployment: {label}, {base_what}", base_value, unit, commands=commands(base_item)))
        out.append(Row(f"deployment: {label}, {what} ({note})", value, unit, commands=commands(item)))
    return out


def memory_rows(figures: Figures) -> list[Row]:
    found = figures.get("deployment")
    if not found:
        return []
    mb = found["plan"]["mb"]
    out = []
    for key, what in (("upload", "upload"), ("download", "download")):
        if not (pair := _pair(figures, "gridfs", "local", key)):
            continue
        item, base_item = pair
        out.append(
            Row(f"deployment: peak server RSS during the {mb} MB {what}, local store", base_item["max_rss_peak_mib"], "MiB")
        )
        ratio = _ratio(item["max_rss_peak_mib"], base_item["max_rss_peak_mib"])
        out.append(
            Row(
                f"deployment: peak server RSS during the {mb} MB {what}, GridFS (GridFS ÷ local: {ratio})",
                item["max_rss_peak_mib"],
                "MiB",
            )
        )
    if pair := _pair(figures, "workers_2", "local", "upload_small"):
        item, base_item = pair
        ratio = _ratio(item["max_rss_peak_mib"], base_item["max_rss_peak_mib"])
        label = "deployment: peak server RSS during the 4 KiB uploads"
        out.append(Row(f"{label}, 1 worker", base_item["max_rss_peak_mib"], "MiB"))
        out.append(Row(f"{label}, 2 workers summed (2 ÷ 1: {ratio})", item["max_rss_peak_mib"], "MiB"))
    return out
