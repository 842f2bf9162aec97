"""Several server processes on one database and one store, racing, as a deployment runs them.

Three `server.py` processes (their own ports) share the test's database and storage; one more is a
single `server.py` with server.processes=3 (a supervisor and three forked workers on one port).
Every cross-request rule (content references, quota, the per-user upload limit) must hold across
them; fsck afterwards finds nothing to repair.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from models.db import Database
from models.tokens import Tokens
from models.users import Users
from tests.helpers import ROOT, opaque, server_env, sha256, start_server, upload

pytestmark = pytest.mark.slow


async def headers_for(settings, jid: str, quota: int | None = None) -> dict[str, str]:
    db = Database(settings.mongodb.uri, settings.mongodb.database)
    try:
        await Users(db.users, settings.quota.default).ensure(jid)
        if quota is not None:
            await db.users.update_one({"_id": jid}, {"$set": {"quota": quota}})
        token = (await Tokens(db.tokens, 3600).issue(jid)).token
    finally:
        await db.close()
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def servers(env: dict[str, str], tmp_path: Path, count: int) -> AsyncIterator[list[str]]:
    """`count` separate server.py processes; yields their URLs; SIGTERM drains each (status 0)."""
    started: list[subprocess.Popen] = []
    urls: list[str] = []
    try:
        for i in range(count):
            proc, url = await asyncio.to_thread(start_server, env, tmp_path / f"server{i}.log")
            started.append(proc)
            urls.append(url)
        yield urls
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(proc.wait, 60) for proc in started]
    assert codes == [0] * count


def fsck(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "fsck"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_nothing_to_fix(report: str) -> None:
    """Every count fsck prints is 0 (staging files of a killed upload aside)."""
    assert "store is consistent" in report
    for line in report.splitlines():
        name, _, value = line.rpartition(": ")
        if name and value.isdigit() and name != "temps removed":
            assert value == "0", report


def on(url: str, file_url: str) -> str:
    """The same /media/ link, on another process."""
    return url + urlsplit(file_url).path


async def verify_all(urls: list[str], headers: dict[str, str]) -> int:
    """Every listed file downloads from every process with the sha256 it is listed with."""
    async with httpx.AsyncClient(timeout=30) as client:
        listed = (await client.get(urls[0] + "/api/v1/files/", headers=headers, params={"obj_per_page": 500})).json()
        for i, item in enumerate(listed["items"]):
            body = (await client.get(on(urls[i % len(urls)], item["file"]))).content
            assert sha256(body) == item["sha256"], "a listed file lost its content"
        return len(listed["items"])


async def test_same_content_uploaded_while_its_last_reference_is_deleted(settings, tmp_path):
    """The content-reference race across processes, hundreds of times: an upload of some bytes
    through one process while the only file with those bytes is deleted through another. Without
    a protocol held by the database the delete unlinks content the upload just referenced."""
    env = server_env(settings)
    headers = await headers_for(settings, "race@example.org")
    rounds, chains = 80, 3  # 240 races of an upload with the delete of the same bytes' last file
    async with servers(env, tmp_path, 3) as urls, httpx.AsyncClient(timeout=30) as client:

        async def chain(c: int) -> None:
            data = opaque(3000 + c)
            digest = sha256(data)
            current = (
                await client.post(urls[c % 3] + "/api/v1/files/upload/", headers=headers, files={"file": ("c", data, "x/y")})
            ).json()
            for r in range(rounds):
                up, down = urls[(r + c) % 3], urls[(r + c + 1) % 3]
                created, deleted = await asyncio.gather(
                    client.post(up + "/api/v1/files/upload/", headers=headers, files={"file": (f"c{c}-{r}.bin", data, "x/y")}),
                    client.delete(down + "/api/v1/files/", headers=headers, params={"id": current["id"]}),
                )
                assert created.status_code == 201, created.text
                assert deleted.status_code == 200, deleted.text
                current = created.json()
                assert current["sha256"] == digest
                body = (await client.get(on(urls[(r + c + 2) % 3], current["file"]))).content
                assert sha256(body) == digest, f"round {r}: the new file lost its content"

        await asyncio.gather(*(chain(c) for c in range(chains)))
        assert await verify_all(urls, headers) == chains
    assert_nothing_to_fix(fsck(env))


async def test_quota_holds_across_processes(settings, tmp_path):
    env = server_env(settings)
    size = 10_000
    headers = await headers_for(settings, "quota@example.org", quota=7 * size)
    async with servers(env, tmp_path, 3) as urls, httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> int:
            r = await client.post(
                urls[i % 3] + "/api/v1/files/upload/", headers=headers, files={"file": (f"q{i}", opaque(size), "x/y")}
            )
            return r.status_code

        codes = await asyncio.gather(*(one(i) for i in range(24)))
        assert codes.count(201) == 7, codes
        assert set(codes) <= {201, 403, 413}, codes
        quota = (await client.get(urls[1] + "/api/v1/account/quota", headers=headers)).json()
        assert quota["used"] == 7 * size
        assert await verify_all(urls, headers) == 7
    assert_nothing_to_fix(fsck(env))


async def slow_upload(url: str, headers: dict[str, str], total: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upload that has sent its headers and the start of its body, and waits."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = ["POST /api/v1/files/upload/ HTTP/1.1", "Host: test", "Content-Type: multipart/form-data; boundary=B"]
    head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {total}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    writer.write(b'--B\r\nContent-Disposition: form-data; name="file"; filename="slow.bin"\r\n\r\n' + b"s" * 1000)
    await writer.drain()
    return reader, writer


async def finish_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, total: int) -> int:
    sent = len(b'--B\r\nContent-Disposition: form-data; name="file"; filename="slow.bin"\r\n\r\n') + 1000
    tail = b"\r\n--B--\r\n"
    writer.write(os.urandom(total - sent - len(tail)) + tail)
    await writer.drain()
    status = int((await asyncio.wait_for(reader.readline(), 30)).split()[1])
    writer.close()
    return status


async def test_per_user_upload_limit_holds_across_processes(settings, tmp_path):
    env = {**server_env(settings), "GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER": "2"}
    headers = await headers_for(settings, "busy@example.org")
    other = await headers_for(settings, "other@example.org")
    total = 200_000
    async with servers(env, tmp_path, 3) as urls, httpx.AsyncClient(base_url=urls[2], timeout=30) as third:
        held = [await slow_upload(urls[0], headers, total), await slow_upload(urls[1], headers, total)]
        await asyncio.sleep(0.5)  # both admitted (their bodies are being received)
        refused = await upload(third, headers, b"third", "t")
        assert refused.status_code == 429, refused.text
        assert (await upload(third, other, opaque(100), "o")).status_code == 201  # per user, not global
        assert await finish_slow(*held[0], total) == 201
        for _ in range(50):  # the lease is given back just after the answer
            r = await upload(third, headers, opaque(100), "t2")
            if r.status_code != 429:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 201, r.text
        assert await finish_slow(*held[1], total) == 201


async def eventually(predicate: Callable[[], bool], seconds: float) -> None:
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def serving_worker(workers: list[int], server_port: int, client_port: int) -> int | None:
    """The worker that accepted the connection from `client_port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return next((pid for pid in workers if inode in socket_inodes(pid)), None)
    return None


async def metrics_from(url: str, port: int, wanted: list[int]) -> str:
    """GET /metrics on a connection that one of the `wanted` workers accepted."""
    host = urlsplit(url).hostname
    for _ in range(50):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await asyncio.sleep(0.05)  # accepted by now
            if serving_worker(wanted, port, writer.get_extra_info("sockname")[1]) is None:
                continue
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), 10)
            return response.split(b"\r\n\r\n", 1)[1].decode()
        finally:
            writer.close()
    raise AssertionError(f"no connection reached any of {wanted}")


async def test_worker_killed_mid_upload_while_the_others_serve(settings, tmp_path):
    """server.processes=3: SIGKILL the worker receiving an upload; the others finish theirs and
    keep answering, the supervisor replaces it, SIGTERM drains the rest, fsck is satisfied."""
    env = {**server_env(settings), "GALLERY_SERVER_PROCESSES": "3"}
    headers = await headers_for(settings, "kill@example.org")
    proc, url = await asyncio.to_thread(start_server, env, tmp_path / "workers.log")
    log = tmp_path / "workers.log"
    try:
        await eventually(lambda: log.read_text().count("gallery serving on") == 3, 30)
        workers = children(proc.pid)  # (the test's database is not the supervisor's child)
        assert len(workers) == 3
        port = urlsplit(url).port
        total = 300_000
        held = [await slow_upload(url, headers, total) for _ in range(6)]
        await asyncio.sleep(0.5)
        owners = [serving_worker(workers, port, w.get_extra_info("sockname")[1]) for _, w in held]
        victim = owners[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for i in range(10):  # the others keep serving meanwhile
                r = await upload(client, headers, opaque(2000 + i), f"during{i}")
                assert r.status_code == 201, r.text
            results = []
            for (reader, writer), owner in zip(held, owners, strict=True):
                if owner == victim:
                    with pytest.raises((ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError)):
                        await finish_slow(reader, writer, total)
                else:
                    results.append(await finish_slow(reader, writer, total))
            assert results == [201] * len(results)
            await eventually(lambda: "starting a new one" in log.read_text(), 20)
            assert f"(pid {victim}) killed by SIGKILL; starting a new one" in log.read_text()
            assert len([p for p in children(proc.pid) if p in workers]) == 2
            listed = (await client.get("/api/v1/files/", headers=headers, params={"obj_per_page": 100})).json()
            assert listed["total_objects"] == 10 + len(results)
            for item in listed["items"]:
                assert sha256((await client.get(item["file"])).content) == item["sha256"]
            # /metrics from a worker that did not store them all counts every worker's uploads
            storers = {
                int(line.split("[", 1)[1].split("]", 1)[0]) for line in log.read_text().splitlines() if "stored upload" in line
            }
            alive = [pid for pid in children(proc.pid)]
            text = await metrics_from(url, port, [pid for pid in alive if storers - {pid}])
            count = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('gallery_uploads_total{outcome="stored"}')
            )
            assert count == 10 + len(results), "metrics sum over the workers"
            inserts = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('gallery_db_commands_total{command="insert"}')
            )
            assert inserts >= count, "every worker's file inserts are among the database commands"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0
    assert "all workers stopped" in log.read_text()
    assert_nothing_to_fix(fsck(env))
