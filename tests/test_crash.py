"""Crash safety: fsck repairs what a crash can leave; a SIGKILL mid-upload loses nothing committed."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.fsck import fsck
from tests.helpers import login, multipart, server_env, sha256, staging, start_server, stop_process, stored, upload

ROOT = Path(__file__).resolve().parent.parent


async def run_fsck(service):
    ctx = service.parts
    return await fsck(ctx)


async def test_fsck_repairs_counts_and_orphans(client, alice, service):
    ctx = service.parts
    kept = os.urandom(2000)
    f = (await upload(client, alice, kept, "kept")).json()
    # what a crash between the protocol's steps can leave behind
    await ctx.db.users.update_one({"_id": "alice@example.org"}, {"$inc": {"used": 12345}})
    await ctx.db.blobs.update_one({"_id": f["sha256"]}, {"$set": {"refs": 7}})
    orphan = os.urandom(100)
    orphan_file = ctx.store.staging_file()
    orphan_file.write_bytes(orphan)
    await ctx.store.commit(await ctx.store.adopt(orphan_file), sha256(orphan))  # content nobody references
    await ctx.db.blobs.insert_one({"_id": "f" * 64, "refs": 1, "size": 1, "md5": "0" * 32})
    derived = ctx.store.staging_file()
    await ctx.store.put_derived("e" * 64, "thumb.png", derived)  # derived images of no content
    stale = ctx.store.staging_file()
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = ctx.store.staging_file()
    fresh.write_bytes(b"in flight")

    report = await run_fsck(service)
    assert report.repaired and report.missing_content == []
    assert (report.used_fixed, report.refs_fixed, report.blob_files_removed, report.blob_docs_removed) == (1, 1, 1, 1)
    assert report.temps_removed == 1 and report.thumb_dirs_removed == 1
    assert not stale.exists() and fresh.exists()
    assert not await stored(service, sha256(orphan))
    assert (await client.get("/api/v1/account/quota", headers=alice)).json()["used"] == 2000
    assert (await ctx.db.blobs.find_one({"_id": f["sha256"]}))["refs"] == 1
    assert (await client.get(f["file"])).content == kept
    # a second run finds nothing to do
    again = await run_fsck(service)
    assert again.lines() == [line.rsplit(":", 1)[0] + ": 0" for line in again.lines()]


async def test_fsck_recreates_missing_blob_doc_and_reports_lost_content(client, alice, service):
    ctx = service.parts
    a = (await upload(client, alice, b"aaaa", "a")).json()
    await upload(client, alice, b"aaaa", "a2")  # two files of that content
    b = (await upload(client, alice, b"bbbb", "b")).json()
    before = await ctx.db.blobs.find_one({"_id": a["sha256"]})
    await ctx.db.blobs.delete_one({"_id": a["sha256"]})
    await ctx.store.remove(b["sha256"])
    report = await run_fsck(service)
    assert report.blob_docs_added == 1
    assert report.missing_content == [b["sha256"]] and not report.repaired
    made = await ctx.db.blobs.find_one({"_id": a["sha256"]})
    # rebuilt from one of its files: their references, md5, size and media type
    assert made["refs"] == 2
    assert {k: made[k] for k in ("md5", "size", "media_type")} == {k: before[k] for k in ("md5", "size", "media_type")}


def test_fsck_command_exit_status(settings):
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "fsck"],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "store is consistent" in result.stdout and "used fixed: 0" in result.stdout


@pytest.mark.slow
async def test_sigkill_during_uploads_then_restart_and_fsck(settings, parts, tmp_path):
    env = server_env(settings)
    headers = await login(parts, "crash@example.org")
    proc, url = start_server(env, tmp_path / "first.log")
    committed: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def one(i: int) -> None:
                data = os.urandom(200_000 + i * 5000)
                try:
                    if i % 2:
                        r = await upload(client, headers, data, f"f{i}.bin")
                    else:  # a slow sender: still in flight when the kill lands, however fast the rest are
                        form, body = multipart([("file", f"f{i}.bin", data)])

                        async def slowly(body: bytes = body):
                            for start in range(0, len(body), 20_000):
                                yield body[start : start + 20_000]
                                await asyncio.sleep(0.5)

                        r = await client.post("/api/v1/files/upload/", headers={**headers, **form}, content=slowly())
                except httpx.HTTPError:
                    return  # killed mid-request
                if r.status_code == 201:
                    committed[r.json()["slot_id"]] = sha256(data)
                    if len(committed) >= 5:
                        enough.set()

            enough = asyncio.Event()
            tasks = [asyncio.create_task(one(i)) for i in range(40)]
            await asyncio.wait_for(enough.wait(), 60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            await asyncio.gather(*tasks)
    finally:
        await asyncio.to_thread(stop_process, proc)
    assert 0 < len(committed) < 40, "the kill should land while uploads are in flight"

    subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "fsck"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    proc, url = start_server(env, tmp_path / "second.log")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            listed = (await client.get("/api/v1/files/", headers=headers, params={"obj_per_page": 500})).json()
            slots = {item["slot_id"]: item for item in listed["items"]}
            assert set(committed) <= set(slots), "every 201 survives the crash"
            for slot_id, item in slots.items():
                body = (await client.get(item["file"])).content
                assert sha256(body) == item["sha256"]
                if slot_id in committed:
                    assert item["sha256"] == committed[slot_id]
            quota = (await client.get("/api/v1/account/quota", headers=headers)).json()
            assert quota["used"] == sum(item["size"] for item in slots.values())
    finally:
        await asyncio.to_thread(stop_process, proc, 30)
    assert staging(parts.store) == []
    on_disk = await parts.store.contents()
    assert on_disk == {item["sha256"] for item in slots.values()}, "no orphan blob, none missing"
    assert {d["_id"] async for d in parts.db.blobs.find({})} == on_disk


async def test_fsck_refuses_to_run_beside_a_running_server(settings, tmp_path):
    """fsck removes content no file references yet and staging files: beside a running server
    that is an upload in flight. It says which processes run and does nothing."""
    env = server_env(settings)
    proc, _ = await asyncio.to_thread(start_server, env, tmp_path / "server.log")
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "server.py"), "fsck"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        assert f":{proc.pid}" in result.stderr and "stop every one first" in result.stderr
        assert "store is consistent" not in result.stdout
    finally:
        await asyncio.to_thread(stop_process, proc)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(ROOT / "server.py"), "fsck"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "store is consistent" in result.stdout, result.stderr


async def test_a_server_does_not_start_while_fsck_repairs(settings, parts):
    """fsck announces itself before it looks for servers, and a server announces itself before
    it looks for fsck: one started while fsck runs refuses, in one line, and leaves nothing."""
    from services.presence import FSCK, Presence

    repairing = Presence(parts.servers, FSCK)
    await repairing.start()
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "server.py")],
            env=server_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert "fsck is repairing this database" in result.stderr and "Traceback" not in result.stderr
        assert [doc["role"] for doc in await parts.db.servers.find().to_list()] == [FSCK]
    finally:
        await repairing.stop()


async def test_start_up_migrations_of_several_processes_run_one_at_a_time(parts):
    """Regression: every worker ran the start-up migration (a recount of every counter) at once,
    and one that finished first served uploads whose counter updates a slower recount then
    overwrote. The migration now holds a deployment-wide lock; a dead holder's lock expires."""
    from services.presence import exclusively

    events: list[tuple[str, str]] = []

    async def work(tag: str) -> str:
        events.append(("start", tag))
        await asyncio.sleep(0.3)
        events.append(("end", tag))
        return tag

    done = await asyncio.gather(*(exclusively(parts.servers, "migrate", tag, lambda tag=tag: work(tag)) for tag in "abc"))
    assert done == ["a", "b", "c"]
    for i in range(0, 6, 2):  # each one's end comes before the next one's start
        assert events[i][0] == "start" and events[i + 1] == ("end", events[i][1])
    assert await parts.db.servers.count_documents({}) == 0
    # a lock whose holder died (expired) is taken over
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await parts.db.servers.insert_one({"_id": "lock:migrate", "role": "lock", "holder": "dead", "expires": past})
    assert await asyncio.wait_for(exclusively(parts.servers, "migrate", "d", lambda: work("d")), 10) == "d"
