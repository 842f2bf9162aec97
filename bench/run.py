#!/usr/bin/env python3
"""gallery's benchmark: the service against this machine's limits and a peer, in one run.

    python bench/run.py [--quick] [--peer prosody] [--profile] [--only uploads,...] [--out-dir DIR]

It starts the service as a user would: `python server.py` in a subprocess, configured only by
GALLERY_* environment variables: port 0 (the URL is read from its "gallery serving on URL" log
line), its own temp storage dir, and no mongodb.uri, so server.py starts the embedded database
itself, with its files in the run's temp dir (`mongodb.embedded_path`). The benchmark reads that
database's port from its log (`<embedded_path>/secantusd.log`, "listening on 127.0.0.1:PORT") and
creates users and tokens there with the service's own model classes, as a login would. It then
runs every measurement (median of repeated runs), stops everything, and writes
bench/results/latest.json and bench/results/latest.md. Progress goes to stderr.

The client is this process: raw non-blocking sockets on one asyncio loop (bench/httpclient.py),
upload bodies sent with sendfile from pre-generated files, download bodies read into one reused
buffer and discarded (whole-file downloads on a blocking socket in a thread, like the loopback
limit's sink). It is a separate process from the server, and its CPU time is recorded
beside the server's for each measurement, so a reader can check that it was never the bottleneck.

`--peer prosody` then runs ../shared/peers/prosody_file_share_bench.py (Prosody's
mod_http_file_share on the same machine) in a subprocess with this interpreter and puts its
figures in the same table. `--profile` records the server and the database with py-spy during
each measurement (collapsed stacks in <out-dir>/profiles/) and prints the hottest functions;
`--only` runs a subset of the measurements (for development). docs/performance.md explains the
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpclient
import limits
import procstat
from httpclient import Connection, FilePart, Response, multipart

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER_SCRIPT = ROOT.parent / "shared" / "peers" / "prosody_file_share_bench.py"
MB = 1_000_000
MIB = 1 << 20
REQUEST_TIMEOUT = 300
START_TIMEOUT = 120
DATABASE = "gallery_bench"
_SERVING = re.compile(r"gallery serving on (\S+)")
_DB_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[bench {time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


@dataclass
class Plan:
    """How much of everything to do; --quick shrinks the repeat counts and request counts."""

    quick: bool
    large_mb: int = 200
    medium_mb: int = 20
    concurrent: int = 8
    concurrent_mb: int = 25
    small_size: int = 4096
    small_in_flight: int = 16
    many_files: int = 10_000
    read_in_flight: int = 8
    repeats_large: int = 5
    repeats: int = 3
    small_count: int = 1000
    dedup_count: int = 500
    revalidations: int = 2000
    list_requests: int = 1000
    list_seconds: float = 8.0
    avatar_repeats: int = 3
    disk_test_mb: int = 1000
    tcp_test_mb: int = 1000
    hash_test_mib: int = 256

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            repeats_large=3,
            repeats=1,
            small_count=300,
            dedup_count=200,
            revalidations=500,
            list_requests=300,
            list_seconds=3.0,
            avatar_repeats=1,
            disk_test_mb=256,
            tcp_test_mb=500,
            hash_test_mib=128,
        )


# --- the service, started as a user would ---------------------------------------------------


class Server:
    """`python server.py` with GALLERY_* variables; the embedded database lives in `tmp/db`."""

    def __init__(self, tmp: Path, plan: Plan) -> None:
        self.tmp = tmp
        self.storage = tmp / "files"
        self.db_dir = tmp / "db"
        self.log_path = tmp / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALLERY_")}
        env.update(
            GALLERY_SERVER_HOST="127.0.0.1",
            GALLERY_SERVER_PORT="0",
            GALLERY_STORAGE_PATH=str(self.storage),
            GALLERY_MONGODB_EMBEDDED_PATH=str(self.db_dir),
            GALLERY_MONGODB_DATABASE=DATABASE,
            GALLERY_LIMITS_MAX_FILE_SIZE=str((plan.large_mb + 10) * MB),
            GALLERY_LIMITS_UPLOADS_PER_WINDOW="100000000",
            GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER="64",
            GALLERY_LIMITS_CONCURRENT_UPLOADS="256",
            GALLERY_QUOTA_DEFAULT=str(10**13),
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.db_uri = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "server.py")],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (found := _SERVING.search(self.log_text())):
            if self.process.poll() is not None:
                raise BenchError(f"server.py exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"server.py did not serve within {START_TIMEOUT} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        self.url = found.group(1)
        db_log = (self.db_dir / "secantusd.log").read_text(errors="replace")
        port = _DB_LISTENING.findall(db_log)[-1]
        self.db_uri = f"mongodb://127.0.0.1:{port}/?retryWrites=false&directConnection=true"

    def db_pid(self) -> int:
        for pid in procstat.children(self.pid):
            if "secantusd" in procstat.cmdline(pid):
                return pid
        raise BenchError("the embedded database process was not found among the server's children")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# --- the state a measurement works with -----------------------------------------------------


@dataclass
class User:
    jid: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Run:
    plan: Plan
    server: Server
    tmp: Path
    large: Path
    part: Path
    profile_dir: Path | None
    only: set[str] = field(default_factory=set)
    users: dict[str, User] = field(default_factory=dict)
    db: Any = None
    db_pid: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    large_file: dict | None = None  # the last 200 MB upload's file object

    def connection(self) -> Connection:
        host, port = self.server.address
        return Connection(host, port)

    def meters(self) -> tuple[procstat.RssSampler, procstat.CpuMeter]:
        return procstat.RssSampler(self.server.pid), procstat.CpuMeter(server=self.server.pid, db=self.db_pid)


def media_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def post_upload(
    conn: Connection,
    user: User,
    content: list[bytes | FilePart],
    size: int,
    name: str,
    route: str = "/api/v1/files/upload/",
    part_type: str = "application/octet-stream",
) -> Response:
    headers, body = multipart(content, size, name, part_type=part_type)
    headers.update(user.auth)
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await conn.request("POST", route, headers, body)


def expect(response: Response, status: int, what: str) -> dict:
    if response.status != status:
        raise BenchError(f"{what}: expected {status}, got {response.status}: {response.body[:400]!r}")
    return json.loads(response.body) if response.body else {}


async def run_pool(
    run: Run,
    in_flight: int,
    count: int,
    one: Callable[[Connection, int], Awaitable[Response]],
    max_seconds: float | None = None,
) -> dict:
    """`count` requests (or as many as fit in max_seconds), `in_flight` keep-alive connections
    each doing one at a time. Returns rate and latency percentiles."""
    latencies: list[float] = []
    numbers = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        conn = run.connection()
        try:
            for number in numbers:
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    return
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    response = await one(conn, number)
                latencies.append(response.seconds)
        finally:
            conn.close()

    rss, cpu = run.meters()
    with rss, cpu:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": wall,
        "per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "server_cpu_s": cpu.used["server"],
        "server_system_cpu_s": cpu.used["server_system"],
        "db_cpu_s": cpu.used["db"],
        "client_cpu_s": cpu.used["client"],
        "rss_peak_mib": rss.peak_mib,
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median_of(samples: list[dict], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


class Profiler:
    """py-spy recording the server and the embedded database while a measurement runs (with
    --profile): collapsed stacks in <out-dir>/profiles/<measurement>.<server|db>.txt, and the
    hottest functions of each printed with the progress."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name
        self.processes: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> Profiler:
        if self.run.profile_dir is None:
            return self
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            progress("py-spy not found: pip install -r requirements-dev.txt; not profiling")
            self.run.profile_dir = None
            return self
        # server: every thread (the hashing threads too, and threads waiting for the GIL or in
        # fsync); server-gil: only the thread holding the GIL, i.e. where Python's CPU goes
        roles = {"server": ["--threads"], "server-gil": ["--gil"], "db": ["--gil"]}
        pids = {"server": self.run.server.pid, "server-gil": self.run.server.pid, "db": self.run.db_pid}
        for role, flags in roles.items():
            out = self.run.profile_dir / f"{self.name}.{role}.txt"
            command = [spy, "record", "--pid", str(pids[role]), "--rate", "200", "--format", "raw", "--output", str(out)]
            command += ["--nonblocking", *flags]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.processes[role] = (process, out)
        time.sleep(0.5)  # let them attach
        return self

    def __exit__(self, *exc_info: object) -> None:
        for role, (process, out) in self.processes.items():
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                continue
            if out.exists():
                progress(f"profile {self.name} ({role}): {out}\n" + summarise_profile(out))
            else:
                progress(f"profile {self.name} ({role}): py-spy wrote nothing: {err.decode(errors='replace')[-400:]}")


def summarise_profile(path: Path, top: int = 12) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks (idle frames
    excluded from the self counts)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"  {total} samples; self time:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    # inclusive time of the service's own functions, and of the database's command handlers
    mine = re.compile(r"\((handlers|services|models|storage)/|secantus/commands\.py")
    lines.append("  inclusive time (service code, database commands):")
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if mine.search(frame) and len(lines) < 2 * top + 3:
            lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


# --- setup ----------------------------------------------------------------------------------


def write_random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as target:
        for offset in range(0, size, 8 * MB):
            target.write(os.urandom(min(8 * MB, size - offset)))
    return path


async def open_db(run: Run) -> None:
    sys.path.insert(0, str(ROOT))
    from models.db import Database

    run.db = Database(run.server.db_uri, DATABASE)


async def make_user(run: Run, key: str, jid: str) -> User:
    """A user with a token, created in the service's database by the service's own models."""
    from models.tokens import Tokens
    from models.users import Users

    await Users(run.db.users, 10**13).ensure(jid)
    issued = await Tokens(run.db.tokens, 86400).issue(jid, device="bench", client="bench/run.py")
    run.users[key] = User(jid, issued.token)
    return run.users[key]


def unique_content(path: Path, size: int) -> list[bytes | FilePart]:
    """`size` bytes: 16 fresh random bytes, then the file's bytes from offset 16 (sendfile), so
    that each upload is new content (no dedup), at no cost to the client."""
    return [os.urandom(16), FilePart(open(path, "rb"), 16, size - 16)]


def close_parts(parts: list[bytes | FilePart]) -> None:
    for part in parts:
        if isinstance(part, FilePart):
            part.file.close()


def digests_of(parts: list[bytes | FilePart]) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            data = part
        else:
            part.file.seek(part.offset)
            data = part.file.read(part.count)
            part.file.seek(0)
        md5.update(data)
        sha256.update(data)
    return md5.hexdigest(), sha256.hexdigest()


# --- measurements ---------------------------------------------------------------------------


async def one_upload(run: Run, size: int, verify: bool) -> dict:
    user = run.users["large"]
    parts = unique_content(run.large, size)
    conn = run.connection()
    rss, cpu = run.meters()
    try:
        with rss, cpu:
            started = time.perf_counter()
            response = await post_upload(conn, user, parts, size, f"large-{size // MB}MB.bin")
            seconds = time.perf_counter() - started
        body = expect(response, 201, f"upload of {size} bytes")
        if body["size"] != size:
            raise BenchError(f"the service stored {body['size']} bytes of {size}")
        if verify and (body["hash"], body["sha256"]) != digests_of(parts):
            raise BenchError("the service's md5/sha256 differ from the client's")
    finally:
        conn.close()
        close_parts(parts)
    run.large_file = body if size == run.plan.large_mb * MB else run.large_file
    gb = size / 1e9
    return {
        "seconds": seconds,
        "mb_s": size / MB / seconds,
        "server_cpu_s": cpu.used["server"],
        "server_cpu_s_per_gb": cpu.used["server"] / gb,
        "client_cpu_s_per_gb": cpu.used["client"] / gb,
        "db_cpu_s": cpu.used["db"],
        "rss_baseline_mib": rss.baseline_mib,
        "rss_peak_mib": rss.peak_mib,
        "rss_growth_mib": rss.growth_mib,
    }


async def measure_uploads(run: Run) -> None:
    plan = run.plan
    medium = []
    for i in range(plan.repeats_large):
        medium.append(await one_upload(run, plan.medium_mb * MB, verify=i == 0))
    progress(
        f"upload {plan.medium_mb} MB: " + ", ".join(f"{s['mb_s']:.0f} MB/s peak {s['rss_peak_mib']:.0f} MiB" for s in medium)
    )
    large = []
    with Profiler(run, "upload_large"):
        for i in range(plan.repeats_large):
            large.append(await one_upload(run, plan.large_mb * MB, verify=i == 0))
            progress(
                f"upload {plan.large_mb} MB #{i + 1}: {large[-1]['mb_s']:.1f} MB/s, "
                f"{large[-1]['server_cpu_s_per_gb']:.2f} server CPU s/GB, peak RSS {large[-1]['rss_peak_mib']:.0f} MiB"
            )
    run.results["upload_medium"] = {"samples": medium, **summary(medium)}
    run.results["upload_large"] = {"samples": large, **summary(large)}


def summary(samples: list[dict]) -> dict:
    keys = [k for k, v in samples[0].items() if isinstance(v, (int, float))]
    out = {f"median_{k}": median_of(samples, k) for k in keys}
    for k in ("rss_peak_mib", "rss_growth_mib", "p99_ms"):
        if k in samples[0]:
            out[f"max_{k}"] = max(s[k] for s in samples)
    return out


async def measure_concurrent(run: Run) -> None:
    plan = run.plan
    size = plan.concurrent_mb * MB
    user = run.users["large"]
    samples = []
    for round_number in range(plan.repeats):
        contents = [unique_content(run.part, size) for _ in range(plan.concurrent)]
        conns = [run.connection() for _ in range(plan.concurrent)]
        rss, cpu = run.meters()
        try:
            with Profiler(run, "upload_concurrent") if round_number == 0 else contextlib.nullcontext(), rss, cpu:
                started = time.perf_counter()
                responses = await asyncio.gather(
                    *(
                        post_upload(conn, user, parts, size, f"part-{i}.bin")
                        for i, (conn, parts) in enumerate(zip(conns, contents, strict=True))
                    )
                )
                seconds = time.perf_counter() - started
        finally:
            for conn, parts in zip(conns, contents, strict=True):
                conn.close()
                close_parts(parts)
        for response in responses:
            expect(response, 201, "concurrent upload")
        total = plan.concurrent * size
        samples.append(
            {
                "seconds": seconds,
                "aggregate_mb_s": total / MB / seconds,
                "server_cpu_s_per_gb": cpu.used["server"] / (total / 1e9),
                "client_cpu_s_per_gb": cpu.used["client"] / (total / 1e9),
                "rss_baseline_mib": rss.baseline_mib,
                "rss_peak_mib": rss.peak_mib,
                "rss_growth_mib": rss.growth_mib,
            }
        )
        progress(
            f"upload {plan.concurrent} x {plan.concurrent_mb} MB: {samples[-1]['aggregate_mb_s']:.1f} MB/s aggregate, "
            f"RSS {rss.baseline_mib:.0f} -> {rss.peak_mib:.0f} MiB"
        )
    run.results["upload_concurrent"] = {"samples": samples, **summary(samples)}


async def measure_small(run: Run) -> None:
    plan = run.plan
    user = run.users["small"]
    samples = []
    for round_number in range(plan.repeats):
        payloads = [os.urandom(plan.small_size) for _ in range(plan.small_count)]

        async def one(conn: Connection, number: int, payloads: list[bytes] = payloads) -> Response:
            response = await post_upload(conn, user, [payloads[number]], plan.small_size, f"small-{number}.bin")
            if response.status != 201:
                expect(response, 201, "small upload")
            return response

        with Profiler(run, "upload_small") if round_number == 0 else contextlib.nullcontext():
            samples.append(await run_pool(run, plan.small_in_flight, plan.small_count, one))
        progress(
            f"{plan.small_count} x {plan.small_size} B uploads: {samples[-1]['per_s']:.0f}/s, "
            f"p50 {samples[-1]['p50_ms']:.1f} ms, p99 {samples[-1]['p99_ms']:.1f} ms"
        )
    run.results["upload_small"] = {"samples": samples, **summary(samples)}


DEDUP_CONTENTS = 100


async def measure_dedup(run: Run) -> None:
    """GET files/slot/ for content the caller already has: 100 files uploaded first, then asked
    for in turn, by sha256 and by md5 alternately; every answer is a new file (no upload)."""
    plan = run.plan
    user = run.users["small"]
    payloads = [os.urandom(plan.small_size) for _ in range(DEDUP_CONTENTS)]

    async def upload_one(conn: Connection, number: int) -> Response:
        response = await post_upload(conn, user, [payloads[number]], plan.small_size, f"have-{number}.bin")
        expect(response, 201, "upload")
        return response

    await run_pool(run, plan.small_in_flight, DEDUP_CONTENTS, upload_one)
    queries = [
        f"hash={hashlib.sha256(p).hexdigest() if i % 2 == 0 else hashlib.md5(p, usedforsecurity=False).hexdigest()}&size={len(p)}"
        for i, p in enumerate(payloads)
    ]

    async def one(conn: Connection, number: int) -> Response:
        route = f"/api/v1/files/slot/?{queries[number % DEDUP_CONTENTS]}&name=dup-{number}.bin"
        response = await conn.request("GET", route, user.auth)
        if response.status != 200 or b'"slot_id"' not in response.body:
            raise BenchError(f"slot dedup: {response.status} {response.body[:300]!r}")
        return response

    samples = []
    for round_number in range(plan.repeats):
        with Profiler(run, "slot_dedup") if round_number == 0 else contextlib.nullcontext():
            samples.append(await run_pool(run, plan.small_in_flight, plan.dedup_count, one, 2 * plan.list_seconds))
        progress(f"slot dedup hits: {samples[-1]['per_s']:.0f}/s, p99 {samples[-1]['p99_ms']:.1f} ms")
    run.results["slot_dedup"] = {"samples": samples, **summary(samples)}


async def measure_downloads(run: Run) -> None:
    plan = run.plan
    if run.large_file is None:  # --only downloads: the file to serve
        await one_upload(run, plan.large_mb * MB, verify=False)
    assert run.large_file is not None
    path = media_path(run.large_file["file"])
    size = run.large_file["size"]
    whole = []
    etag = ""
    with Profiler(run, "download_whole"):
        for _ in range(plan.repeats_large):
            rss, cpu = run.meters()
            with rss, cpu:
                started = time.perf_counter()
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    response = await asyncio.to_thread(httpclient.get_discarding, *run.server.address, path)
                seconds = time.perf_counter() - started
            if response.status != 200 or response.length != size:
                raise BenchError(f"download: {response.status}, {response.length} of {size} bytes")
            etag = response.headers["etag"]
            whole.append(
                {
                    "seconds": seconds,
                    "mb_s": size / MB / seconds,
                    "server_cpu_s_per_gb": cpu.used["server"] / (size / 1e9),
                    "client_cpu_s_per_gb": cpu.used["client"] / (size / 1e9),
                    "rss_peak_mib": rss.peak_mib,
                }
            )
            progress(f"download {size // MB} MB: {whole[-1]['mb_s']:.0f} MB/s")
    run.results["download_whole"] = {"samples": whole, **summary(whole)}

    ranges = []
    count = size // MB
    with Profiler(run, "download_ranges"):
        for _ in range(plan.repeats):
            conn = run.connection()
            cpu = procstat.CpuMeter(server=run.server.pid)
            try:
                with cpu:
                    started = time.perf_counter()
                    for i in range(count):
                        headers = {"Range": f"bytes={i * MB}-{(i + 1) * MB - 1}"}
                        async with asyncio.timeout(REQUEST_TIMEOUT):
                            response = await conn.request("GET", path, headers, keep_body=False)
                        if response.status != 206 or response.length != MB:
                            raise BenchError(f"range download: {response.status}, {response.length} bytes")
                    seconds = time.perf_counter() - started
            finally:
                conn.close()
            ranges.append(
                {
                    "seconds": seconds,
                    "mb_s": count * MB / MB / seconds,
                    "requests_per_s": count / seconds,
                    "server_cpu_s_per_gb": cpu.used["server"] / (count * MB / 1e9),
                }
            )
            progress(f"download as {count} x 1 MB ranges: {ranges[-1]['mb_s']:.0f} MB/s")
    run.results["download_ranges"] = {"samples": ranges, **summary(ranges)}

    async def revalidate(conn: Connection, number: int) -> Response:
        response = await conn.request("GET", path, {"If-None-Match": etag})
        if response.status != 304:
            raise BenchError(f"revalidation: {response.status}")
        return response

    samples = []
    for round_number in range(plan.repeats):
        with Profiler(run, "revalidate_304") if round_number == 0 else contextlib.nullcontext():
            samples.append(await run_pool(run, plan.small_in_flight, plan.revalidations, revalidate))
        progress(f"304 revalidations: {samples[-1]['per_s']:.0f}/s, p99 {samples[-1]['p99_ms']:.1f} ms")
    run.results["revalidate_304"] = {"samples": samples, **summary(samples)}


BUCKET_KINDS = [
    ("image/jpeg", "jpg", 0.45),
    ("image/png", "png", 0.10),
    ("video/mp4", "mp4", 0.10),
    ("audio/ogg", "ogg", 0.15),
    ("application/pdf", "pdf", 0.10),
    ("application/octet-stream", "bin", 0.10),
]


async def seed_many_files(run: Run, user: User, count: int) -> dict:
    """`count` file documents for `user`, inserted straight into the database for speed, each a
    copy of a document the service itself wrote (so the shape is exactly the service's), with
    its own id, slot, name, content hashes, size, type and date. The owner's `used` (and any
    per-user counters the service keeps) are then set the way fsck computes them."""
    from bson import ObjectId

    template = await run.db.files.find_one({"owner": run.users["small"].jid, "is_avatar": False})
    if template is None:
        raise BenchError("no file document to copy")
    rng = random.Random(20261122)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    kinds = [k for k, _, _ in BUCKET_KINDS]
    weights = [w for _, _, w in BUCKET_KINDS]
    extension = {k: e for k, e, _ in BUCKET_KINDS}
    docs = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        doc = dict(template)
        image = kind.startswith(("image/", "video/"))
        width, height = rng.choice([(4000, 3000), (1920, 1080), (1280, 960)]) if image else (None, None)
        doc.update(
            _id=ObjectId(),
            owner=user.jid,
            slot_id=secrets.token_urlsafe(18),
            name=f"file-{i:05d}.{extension[kind]}",
            sha256=rng.randbytes(32).hex(),
            md5=rng.randbytes(16).hex(),
            size=rng.randint(1_000, 5_000_000),
            media_type=kind,
            is_avatar=False,
            context="voice" if kind.startswith("audio/") else "file",
            metadata=None,
            width=width,
            height=height,
            thumbnail={"file": "thumb.jpg", "media_type": "image/jpeg", "width": 256, "height": 256} if image else None,
            created_at=now - dt.timedelta(seconds=rng.randint(0, 365 * 86400), milliseconds=rng.randint(0, 999)),
        )
        docs.append(doc)
    for start in range(0, count, 1000):
        await run.db.files.insert_many(docs[start : start + 1000], ordered=False)
    used = sum(doc["size"] for doc in docs)
    await run.db.users.update_one({"_id": user.jid}, {"$set": {"used": used}})
    await recount_user(run, user.jid)
    return {"count": count, "used": used}


async def recount_user(run: Run, jid: str) -> None:
    """The owner's file counters, computed from `files` by the code fsck runs (when the service
    keeps counters)."""
    from models.files import Files

    files = Files(run.db.files)
    if hasattr(files, "recount"):
        await files.recount(jid)


async def measure_listing(run: Run) -> None:
    plan = run.plan
    user = run.users["many"]
    started = time.perf_counter()
    seeded = await seed_many_files(run, user, plan.many_files)
    progress(f"inserted {plan.many_files} file documents in {time.perf_counter() - started:.1f} s")
    pages = -(-plan.many_files // 50)
    routes = {
        "list_page1": "/api/v1/files/",
        "list_deep_page": f"/api/v1/files/?page={max(1, pages * 3 // 4)}",
        "stats": "/api/v1/files/stats/",
        "stats_filtered": "/api/v1/files/stats/?media_type=image",
    }
    for key, route in routes.items():
        first = expect(await one_request(run, route, user), 200, route)
        if key.startswith("list") and first["total_objects"] != seeded["count"]:
            raise BenchError(f"{route}: total_objects {first['total_objects']}, expected {seeded['count']}")
        if key == "stats" and (first["total"]["count"], first["total"]["used"]) != (seeded["count"], seeded["used"]):
            raise BenchError(f"{route}: total {first['total']}, expected {seeded}")

        async def one(conn: Connection, number: int, route: str = route) -> Response:
            response = await conn.request("GET", route, user.auth)
            if response.status != 200:
                raise BenchError(f"{route}: {response.status} {response.body[:300]!r}")
            return response

        samples = []
        for round_number in range(plan.repeats):
            with Profiler(run, key) if round_number == 0 else contextlib.nullcontext():
                samples.append(await run_pool(run, plan.read_in_flight, plan.list_requests, one, plan.list_seconds))
            progress(
                f"GET {route} ({plan.many_files} files): {samples[-1]['per_s']:.0f} req/s, p99 {samples[-1]['p99_ms']:.1f} ms, "
                f"db CPU {samples[-1]['db_cpu_s']:.1f} s of {samples[-1]['seconds']:.1f} s"
            )
        run.results[key] = {"route": route, "samples": samples, **summary(samples)}


async def one_request(run: Run, route: str, user: User) -> Response:
    conn = run.connection()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await conn.request("GET", route, user.auth)
    finally:
        conn.close()


@functools.cache
def small_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((64, 64)).save(out, "PNG")
    return out.getvalue()


def make_images(directory: Path) -> dict[str, Path]:
    """A photo-like 24-megapixel JPEG (6000x4000) and a 4000x3000 PNG (gradients and noise)."""
    from PIL import Image, ImageFilter

    width, height = 6000, 4000
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.effect_noise((width, height), 64).filter(ImageFilter.GaussianBlur(1.5))
    picture = Image.merge("RGB", (red, green, blue))
    jpeg = directory / "avatar-24mp.jpg"
    picture.save(jpeg, quality=90)
    png = directory / "avatar-4000x3000.png"
    picture.resize((4000, 3000)).save(png, compress_level=3)
    return {"jpeg_24mp": jpeg, "png_4000x3000": png}


async def measure_avatars(run: Run) -> None:
    plan = run.plan
    user = run.users["avatar"]
    images = await asyncio.to_thread(make_images, run.tmp)
    route = "/api/v1/avatar/upload/"
    # warm-up: the imaging pool starts its worker processes on its first job; a user meets that
    # once per service start, so the figures below are for a started pool
    conn = run.connection()
    try:
        warm = await post_upload(conn, user, [small_png()], len(small_png()), "warm.png", route, "image/png")
    finally:
        conn.close()
    run.results["avatar_warm_up_ms"] = warm.seconds * 1000
    for key, path in images.items():
        size = path.stat().st_size
        samples = []
        part_type = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        for round_number in range(plan.avatar_repeats):
            parts: list[bytes | FilePart] = [FilePart(open(path, "rb"), 0, size)]  # noqa: SIM115
            conn = run.connection()
            rss, cpu = run.meters()
            try:
                with Profiler(run, f"avatar_{key}") if round_number == 0 else contextlib.nullcontext(), rss, cpu:
                    started = time.perf_counter()
                    response = await post_upload(conn, user, parts, size, path.name, route, part_type)
                    seconds = time.perf_counter() - started
            finally:
                conn.close()
                close_parts(parts)
            if response.status in (404, 405):
                run.results[f"avatar_{key}"] = {"available": False, "status": response.status}
                progress(f"avatar upload: {route} answered {response.status}: not available")
                return
            body = expect(response, 201, f"avatar {key}")
            samples.append(
                {
                    "ms": seconds * 1000,
                    "server_cpu_s": cpu.used["server"],
                    "rss_peak_mib": rss.peak_mib,
                    "thumbnails": len(body.get("thumbnails") or []),
                }
            )
            progress(f"avatar {key} ({size / MB:.1f} MB): {samples[-1]['ms']:.0f} ms, {samples[-1]['thumbnails']} thumbnails")
        run.results[f"avatar_{key}"] = {"available": True, "bytes": size, "samples": samples, **summary(samples)}


# --- machine limits and the peer ------------------------------------------------------------


LIMIT_TRIES = 3  # a limit is the best of this many tries: what the machine can do, not what it did once


def measure_machine(run: Run) -> dict:
    plan = run.plan
    run.server.storage.mkdir(parents=True, exist_ok=True)
    progress("machine limits: md5, sha256, disk write + fsync, durable 4 KiB writes, loopback TCP")
    md5 = max(limits.hash_mb_s("md5", plan.hash_test_mib * MIB) for _ in range(LIMIT_TRIES))
    sha256 = max(limits.hash_mb_s("sha256", plan.hash_test_mib * MIB) for _ in range(LIMIT_TRIES))
    machine = {
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "md5_mb_s": md5,
        "sha256_mb_s": sha256,
        "md5_plus_sha256_mb_s": 1 / (1 / md5 + 1 / sha256),
        "disk_write_mb_s": limits.disk_write_mb_s(run.server.storage, plan.disk_test_mb * MB),
        "durable_small_writes_per_s": limits.durable_small_writes_per_s(run.server.storage, 2.0 if not plan.quick else 1.0),
        "loopback_tcp_mb_s": max(limits.loopback_tcp_mb_s(plan.tcp_test_mb * MB) for _ in range(LIMIT_TRIES)),
    }
    progress("machine: " + ", ".join(f"{k} {v:.1f}" for k, v in machine.items() if isinstance(v, float)))
    return machine


def run_peer(name: str, tmp: Path, plan: Plan) -> dict:
    """Prosody's mod_http_file_share measured by the shared peer script, in a subprocess."""
    if name != "prosody":
        return {"available": False, "why": f"unknown peer {name!r}"}
    if not PEER_SCRIPT.exists():
        return {"available": False, "why": f"peer script not found at {PEER_SCRIPT}"}
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        return {"available": False, "why": "Prosody is not installed (apt-get install prosody)"}
    check = subprocess.run([sys.executable, "-c", "import slixmpp, httpx"], check=False, capture_output=True)
    if check.returncode != 0:
        return {"available": False, "why": f"{sys.executable} lacks slixmpp or httpx"}
    results: dict[str, Any] = {"available": True, "script": str(PEER_SCRIPT)}
    configs = [("tuned", ["--min-wait", "1e-6"])]
    if not plan.quick:
        configs.append(("default", []))
    for config, extra in configs:
        out = tmp / f"prosody-{config}.json"
        progress(f"peer: Prosody mod_http_file_share ({config} network settings), about {'15' if config == 'tuned' else '60'} s")
        done = subprocess.run(
            [sys.executable, str(PEER_SCRIPT), "--out", str(out), "--size-mb", str(plan.large_mb), *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
        if done.returncode != 0 or not out.exists():
            results[config] = {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
            progress(f"peer failed: {done.stderr[-800:]}")
            continue
        results[config] = json.loads(out.read_text())
        large = results[config]["large"]
        progress(f"peer {config}: PUT {large['put_mb_s']:.1f} MB/s, GET {large['get_mb_s']:.1f} MB/s")
    return results


# --- the report -----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: float | None
    unit: str
    limit_name: str = ""
    limit: float | None = None
    peer: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def build_rows(results: dict) -> list[Row]:
    """The table's rows, for whatever measurements the run made (--only may skip some)."""
    m = results["machine"]
    plan = results["plan"]
    peer = results.get("peer", {})
    pr = peer.get("tuned") if peer.get("available") and "large" in peer.get("tuned", {}) else None
    md5, tcp = m["md5_mb_s"], m["loopback_tcp_mb_s"]
    rows: list[Row] = []
    add = rows.append
    up = results.get("upload_large")
    if up:
        peer_put = pr["large"]["put_mb_s"] if pr else None
        value = up["median_mb_s"]
        met = value >= 0.5 * md5 and (peer_put is None or value >= 2 * peer_put)
        add(
            Row(
                f"upload {plan['large_mb']} MB, one file",
                value,
                "MB/s",
                "md5, one core",
                md5,
                peer_put,
                "≥ 0.5 × md5, ≥ 2 × Prosody",
                met,
            )
        )
        floor = 1000 / m["md5_mb_s"] + 1000 / m["sha256_mb_s"]
        add(
            Row(
                "  server CPU per GB uploaded",
                up["median_server_cpu_s_per_gb"],
                "CPU s/GB",
                "md5+sha256 of 1 GB",
                floor,
                note=f"client CPU {up['median_client_cpu_s_per_gb']:.2f} s/GB",
            )
        )
    conc = results.get("upload_concurrent")
    if conc:
        peer_conc = pr["concurrent"]["aggregate_mb_s"] if pr else None
        add(
            Row(
                f"upload {plan['concurrent']} × {plan['concurrent_mb']} MB concurrently, aggregate",
                conc["median_aggregate_mb_s"],
                "MB/s",
                "md5, one core",
                md5,
                peer_conc,
            )
        )
    small = results.get("upload_small")
    if small:
        peer_small = pr["small"]["uploads_per_s_slot_excluded"] if pr else None
        add(
            Row(
                f"{plan['small_count']} uploads of 4 KiB, {plan['small_in_flight']} in flight",
                small["median_per_s"],
                "uploads/s",
                "durable 4 KiB writes/s",
                m["durable_small_writes_per_s"],
                peer_small,
                "≥ 300/s",
                small["median_per_s"] >= 300,
                db_note(small) + "; Prosody: PUT on a slot fetched earlier",
            )
        )
        add(Row("  4 KiB upload latency p50", small["median_p50_ms"], "ms"))
        add(Row("  4 KiB upload latency p99", small["median_p99_ms"], "ms"))
    dedup = results.get("slot_dedup")
    if dedup:
        peer_slots = pr["small"]["slots_per_s"] if pr else None
        add(
            Row(
                "slot dedup hits (a file made without an upload)",
                dedup["median_per_s"],
                "requests/s",
                peer=peer_slots,
                note=db_note(dedup) + "; Prosody: XMPP slot requests/s, no dedup",
            )
        )
    dl = results.get("download_whole")
    if dl:
        peer_get = pr["large"]["get_mb_s"] if pr else None
        met = dl["median_mb_s"] >= 0.6 * tcp and (peer_get is None or dl["median_mb_s"] >= 2 * peer_get)
        add(
            Row(
                f"download {plan['large_mb']} MB, whole",
                dl["median_mb_s"],
                "MB/s",
                "loopback TCP copy",
                tcp,
                peer_get,
                "≥ 0.6 × loopback, ≥ 2 × Prosody",
                met,
                f"server CPU {dl['median_server_cpu_s_per_gb']:.2f} s/GB",
            )
        )
    rg = results.get("download_ranges")
    if rg:
        add(
            Row(
                f"download {plan['large_mb']} MB as 1 MB ranges, one connection",
                rg["median_mb_s"],
                "MB/s",
                "loopback TCP copy",
                tcp,
                note=f"{rg['median_requests_per_s']:.0f} requests/s",
            )
        )
    rv = results.get("revalidate_304")
    if rv:
        add(
            Row(
                f"304 revalidations, {plan['small_in_flight']} in flight",
                rv["median_per_s"],
                "requests/s",
                note=f"p99 {rv['median_p99_ms']:.1f} ms",
            )
        )
    labels = {
        "list_page1": "GET files/, page 1",
        "list_deep_page": "GET files/, page {page}",
        "stats": "GET files/stats/",
        "stats_filtered": "GET files/stats/?media_type=image",
    }
    for key, label in labels.items():
        item = results.get(key)
        if not item:
            continue
        page = item["route"].rpartition("=")[2]
        target = "≥ 1000/s" if key in ("list_page1", "stats") else ""
        add(
            Row(
                f"{label.format(page=page)} ({plan['many_files']:,} files), {plan['read_in_flight']} in flight",
                item["median_per_s"],
                "requests/s",
                target=target,
                met=(item["median_per_s"] >= 1000) if target else None,
                note=f"p99 {item['median_p99_ms']:.1f} ms; " + db_note(item),
            )
        )
    for key, label, target in (
        ("avatar_jpeg_24mp", "avatar: 24 MP JPEG (6000×4000)", "≤ 400 ms"),
        ("avatar_png_4000x3000", "avatar: 4000×3000 PNG", ""),
    ):
        item = results.get(key)
        if item is None:
            continue
        if not item.get("available"):
            add(
                Row(
                    label,
                    None,
                    "ms",
                    target=target,
                    note=f"not available: POST avatar/upload/ answered {item.get('status', '?')}",
                )
            )
            continue
        add(
            Row(
                label,
                item["median_ms"],
                "ms",
                target=target,
                met=(item["median_ms"] <= 400) if target else None,
                note=f"{item['bytes'] / MB:.1f} MB, {item['median_thumbnails']:.0f} WebP sizes",
            )
        )
    if up:
        add(
            Row(
                f"peak server RSS during the {plan['large_mb']} MB upload",
                up["max_rss_peak_mib"],
                "MiB",
                peer=pr["large"]["peak_rss_mib"] if pr else None,
                note=f"idle before: {up['median_rss_baseline_mib']:.0f} MiB",
            )
        )
    if conc:
        add(
            Row(
                f"peak server RSS during {plan['concurrent']} × {plan['concurrent_mb']} MB",
                conc["max_rss_peak_mib"],
                "MiB",
                peer=pr["concurrent"]["peak_rss_mib"] if pr else None,
            )
        )
        add(
            Row(
                f"  RSS growth during {plan['concurrent']} × {plan['concurrent_mb']} MB",
                conc["max_rss_growth_mib"],
                "MiB",
                target="< 50 MiB",
                met=conc["max_rss_growth_mib"] < 50,
            )
        )
    med = results.get("upload_medium")
    if up and med:
        diff = up["max_rss_peak_mib"] - med["max_rss_peak_mib"]
        add(
            Row(
                f"peak RSS, {plan['medium_mb']} MB upload vs {plan['large_mb']} MB upload",
                diff,
                "MiB",
                target="within 10 MiB",
                met=abs(diff) <= 10,
                note=f"{med['max_rss_peak_mib']:.0f} vs {up['max_rss_peak_mib']:.0f} MiB",
            )
        )
    for label, key, unit in (
        ("machine: md5, one core", "md5_mb_s", "MB/s"),
        ("machine: sha256, one core", "sha256_mb_s", "MB/s"),
        ("machine: sequential write + fsync, storage dir", "disk_write_mb_s", "MB/s"),
        ("machine: 4 KiB write + fsync + rename + dir fsync", "durable_small_writes_per_s", "per s"),
        ("machine: loopback TCP copy (asyncio → sink process)", "loopback_tcp_mb_s", "MB/s"),
    ):
        add(Row(label, m[key], unit))
    return rows


def db_note(item: dict) -> str:
    """CPU per request in the server and in the embedded database (a pure-Python process): on 2
    cores, whichever nears 1 s of CPU per second bounds the rate."""
    requests = item["median_requests"] or 1
    server = item["median_server_cpu_s"] / requests * 1000
    db = item["median_db_cpu_s"] / requests * 1000
    busy = item["median_db_cpu_s"] / item["median_seconds"]
    return f"CPU per request: server {server:.1f} ms, DB {db:.1f} ms; DB busy {busy:.0%}"


def markdown(results: dict) -> str:
    rows = build_rows(results)
    m = results["machine"]
    peer = results.get("peer", {})
    lines = [
        f"gallery benchmark, {results['date']}, {'quick' if results['plan']['quick'] else 'full'} run in "
        f"{results['run_seconds']:.0f} s: {m['cpus']} CPUs ({results['cpu_model']}), Python {results['python']}, "
        f"tornado {results['tornado']}, 1-minute load average {m['load_average_1m']:.2f} before the run"
        + "".join(f", {load:.2f} before {name}" for name, load in results.get("load_average_before", {}).items())
        + "; medians of repeated runs "
        f"(MB = 10^6 bytes). Command: `{results['command']}`.",
        "",
        "| measurement | gallery | unit | machine limit (same run) | limit | gallery ÷ limit "
        "| Prosody | gallery ÷ Prosody | target | met |",
        "|---|---:|---|---|---:|---:|---:|---:|---|:---:|",
    ]
    for row in rows:
        ratio = f"{row.value / row.limit:.2f}" if row.value is not None and row.limit else ""
        peer_ratio = f"{row.value / row.peer:.1f}×" if row.value is not None and row.peer else ""
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.name}{note} | {fmt(row.value)} | {row.unit} | {row.limit_name} | {fmt(row.limit)} | {ratio} | "
            f"{fmt(row.peer)} | {peer_ratio} | {row.target} | {met} |"
        )
    lines.append("")
    if not peer:
        lines.append("Prosody: not run (add `--peer prosody`).")
    elif not peer.get("available"):
        lines.append(f"Prosody: not available: {peer.get('why')}.")
    else:
        tuned = peer.get("tuned", {})
        if "large" in tuned:
            lines.append(
                f"Prosody {tuned.get('prosody_version', '?')} mod_http_file_share, measured by "
                "`shared/peers/prosody_file_share_bench.py --min-wait 1e-6` in the same run (its 1 ms default "
                "`min_wait` caps uploads at a few MB/s; the column shows it without that cap)."
            )
        else:
            lines.append(f"Prosody (tuned) failed: {tuned.get('error', '?')[:300]}")
        default = peer.get("default", {})
        if "large" in default:
            lines.append(
                f"With Prosody's default network settings: PUT {default['large']['put_mb_s']:.1f} MB/s, "
                f"GET {default['large']['get_mb_s']:.1f} MB/s, 8 × 25 MB {default['concurrent']['aggregate_mb_s']:.1f} MB/s, "
                f"4 KiB PUTs {default['small']['uploads_per_s_slot_excluded']:.0f}/s."
            )
    lines.append("")
    lines.append(
        "The client is a separate process (raw asyncio sockets, sendfile for upload bodies, downloads read into one "
        "reused buffer); its CPU per GB is in latest.json beside the server's. The embedded database (SecantusDB, "
        "pure Python) is a third process on the same 2 cores."
    )
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------


STEPS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "uploads": measure_uploads,
    "concurrent": measure_concurrent,
    "small": measure_small,
    "dedup": measure_dedup,
    "downloads": measure_downloads,
    "listing": measure_listing,
    "avatars": measure_avatars,
}


async def measure_service(run: Run) -> None:
    await open_db(run)
    run.db_pid = run.server.db_pid()
    for key in ("large", "small", "many", "avatar"):
        await make_user(run, key, f"bench-{key}@bench.example")
    conn = run.connection()  # warm up: the first request of each kind
    try:
        expect(await post_upload(conn, run.users["small"], [os.urandom(4096)], 4096, "warmup.bin"), 201, "warm-up upload")
    finally:
        conn.close()
    try:
        for name, step in STEPS.items():
            if run.only and name not in run.only:
                continue
            progress(f"measuring: {name}")
            run.results.setdefault("load_average_before", {})[name] = os.getloadavg()[0]
            await step(run)
    finally:
        await run.db.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set: fewer repeats and requests (under 2 minutes)")
    parser.add_argument("--peer", choices=["prosody"], help="also measure a peer on this machine and put it in the table")
    parser.add_argument("--profile", action="store_true", help="record the server with py-spy during each measurement")
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where latest.json and latest.md go")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the run's temp dir (default: the system's)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of measurements, for development: {','.join(STEPS)}")
    return parser.parse_args(argv)


def write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    plan = Plan.make(args.quick)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    profile_dir = None
    if args.profile:
        profile_dir = args.out_dir / "profiles"
        profile_dir.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gallery-bench-", dir=args.tmp))
    server = Server(tmp, plan)
    results: dict[str, Any] = {}
    try:
        client_dir = tmp / "client"
        client_dir.mkdir()
        progress(f"temp dir {tmp}; generating {plan.large_mb} MB and {plan.concurrent_mb} MB random files")
        large = write_random_file(client_dir / "large.bin", plan.large_mb * MB)
        part = write_random_file(client_dir / "part.bin", plan.concurrent_mb * MB)
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        if only - set(STEPS):
            raise SystemExit(f"--only: unknown measurements {sorted(only - set(STEPS))}; known: {', '.join(STEPS)}")
        run = Run(plan, server, tmp, large, part, profile_dir, only)
        results["machine"] = measure_machine(run)
        progress("starting the service: python server.py (embedded database)")
        server.start()
        progress(f"service at {server.url}, pid {server.pid}; database {server.db_uri}")
        asyncio.run(measure_service(run))
        results.update(run.results)
    except BaseException:
        if server.log_path.exists():
            print(f"--- server.log (last lines) ---\n{server.log_text()[-4000:]}", file=sys.stderr)
        progress("stopping the service")
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("stopping the service")
    server.stop()
    try:
        if args.peer:
            results["peer"] = run_peer(args.peer, tmp, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import tornado

    command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    results.update(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=command,
        plan=asdict(plan),
        python=platform.python_version(),
        tornado=tornado.version,
        cpu_model=cpu_model(),
        git=subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=False, capture_output=True, text=True
        ).stdout.strip(),
        run_seconds=time.perf_counter() - STARTED,
    )
    write_atomic(args.out_dir / "latest.json", json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    write_atomic(args.out_dir / "latest.md", table)
    print(table)
    progress(f"wrote {args.out_dir / 'latest.json'} and {args.out_dir / 'latest.md'} in {results['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
