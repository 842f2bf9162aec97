"""Load: 200 concurrent mixed requests from several users against `python server.py`."""

from __future__ import annotations

import asyncio
import os
import random

import httpx
import pytest

from tests.conftest import STORAGE_BACKEND
from tests.helpers import login, server_env, sha256, start_server, stop_process, upload

USERS = 5
CONCURRENCY = 200
OPERATIONS = 1200
# Peak RSS allowed for the server process. Idle it holds ~60 MiB (interpreter, Tornado, PyMongo,
# libmagic); under this load each of up to 200 connections may hold a 256 KiB read chunk (its
# buffer up to 1 MiB), an upload its two 1 MiB write batches, and a download a 4 MiB step.
# Measured 2026-12-02, alone: 160-227 MiB over nine runs (the tree before that day's work:
# 167-214), and 291 MiB once inside the full suite on the 2 shared cores (more requests in flight
# at once). What the bound is for is a body or file held whole in memory: the 5 MB uploads alone,
# 200 at once, would be ~1 GiB. With GridFS each chunk in flight is held twice, as the driver's
# wire message and as the decoded (or, for an insert, encoded) document: 64 MiB more allowed.
RSS_LIMIT_MIB = 320 if STORAGE_BACKEND == "local" else 384


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_mixed_load_loses_nothing(settings, parts, tmp_path):
    env = {**server_env(settings), "GALLERY_LIMITS_CONCURRENT_UPLOADS": str(CONCURRENCY)}
    proc, url = start_server(env, tmp_path / "server.log")
    rng = random.Random(20261122)
    statuses: dict[int, int] = {}
    stored: dict[str, dict] = {}  # slot_id -> file object from a 201
    try:
        headers = [await login(parts, f"load{i}@example.org") for i in range(USERS)]
        payloads = [os.urandom(rng.choice([1000, 20_000, 300_000, 1_000_000, 5_000_000])) for _ in range(24)]
        plan = [
            (rng.choice(["upload", "upload", "list", "download", "range", "slot", "stats"]), rng.randrange(USERS))
            for _ in range(OPERATIONS)
        ]
        queue: asyncio.Queue = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

            async def run(kind: str, user: int) -> int:
                h = headers[user]
                if kind == "upload" or not stored:
                    data = payloads[rng.randrange(len(payloads))]
                    r = await upload(client, h, data, f"load-{rng.randrange(10**6)}.bin")
                    if r.status_code == 201:
                        stored[r.json()["slot_id"]] = {**r.json(), "owner": user}
                    return r.status_code
                target = stored[rng.choice(list(stored))]
                if kind == "list":
                    return (await client.get("/api/v1/files/", headers=h, params={"obj_per_page": 20})).status_code
                if kind == "stats":
                    return (await client.get("/api/v1/files/stats/", headers=h)).status_code
                if kind == "slot":
                    params = {"hash": target["sha256"], "size": target["size"], "name": "again.bin"}
                    return (await client.get("/api/v1/files/slot/", headers=h, params=params)).status_code
                if kind == "download":
                    r = await client.get(target["file"])
                    assert r.status_code != 200 or sha256(r.content) == target["sha256"]
                    return r.status_code
                start = rng.randrange(max(1, target["size"]))
                r = await client.get(target["file"], headers={"Range": f"bytes={start}-{start + 9999}"})
                return r.status_code

            async def worker() -> None:
                while not queue.empty():
                    kind, user = queue.get_nowait()
                    status = await run(kind, user)
                    statuses[status] = statuses.get(status, 0) + 1

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 150)

            assert not [s for s in statuses if s >= 500], statuses
            assert set(statuses) <= {200, 201, 206}, statuses
            # every 201 is listed and downloads intact; used is the sum of sizes, per user
            for user, h in enumerate(headers):
                listed = []
                page = 1
                while True:
                    body = (await client.get("/api/v1/files/", headers=h, params={"obj_per_page": 500, "page": page})).json()
                    listed += body["items"]
                    if page >= body["total_pages"]:
                        break
                    page += 1
                slots = {item["slot_id"] for item in listed}
                assert {s for s, f in stored.items() if f["owner"] == user} <= slots
                quota = (await client.get("/api/v1/account/quota/", headers=h)).json()
                assert quota["used"] == sum(item["size"] for item in listed)
            for f in rng.sample(list(stored.values()), min(40, len(stored))):
                assert sha256((await client.get(f["file"])).content) == f["sha256"]
        peak = peak_rss_mib(proc.pid)
        assert peak < RSS_LIMIT_MIB, f"server peak RSS {peak:.0f} MiB"
        print(f"load: {sum(statuses.values())} requests {statuses}, server peak RSS {peak:.0f} MiB")
    finally:
        await asyncio.to_thread(stop_process, proc, 30)
