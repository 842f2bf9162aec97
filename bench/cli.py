"""The command line: make the plan, measure the machine, start the service, run the measurements,
stop it, run the peer, write the report."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import fixtures, machine, peer, report
from bench.client import expect, upload_once
from bench.common import BENCH, MB, ROOT, STARTED, progress
from bench.measure import BY_NAME, MEASUREMENTS
from bench.plan import Plan
from bench.server import Server
from bench.session import Session


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=(sys.modules["bench"].__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set: fewer repeats and requests (under 2 minutes)")
    parser.add_argument("--peer", choices=["prosody"], help="also measure a peer on this machine and put it in the table")
    parser.add_argument("--profile", action="store_true", help="record the server with py-spy during each measurement")
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where latest.json and latest.md go")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the run's temp dir (default: the system's)")
    parser.add_argument(
        "--files",
        type=file_counts,
        default=None,
        help="comma-separated sizes of the listed owner for the listing and stats figures (default 10000,100000; --quick 10000)",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of measurements, for development: {','.join(BY_NAME)}"
    )
    return parser.parse_args(argv)


def file_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of file counts: {text!r}") from None
    if not counts or any(not 1 <= count <= 1_000_000 for count in counts):
        raise argparse.ArgumentTypeError("file counts are 1 to 1000000")
    return counts


def selected(only: str) -> list:
    names = {name.strip() for name in only.split(",") if name.strip()}
    if names - set(BY_NAME):
        raise SystemExit(f"--only: unknown measurements {sorted(names - set(BY_NAME))}; known: {', '.join(BY_NAME)}")
    return [module for module in MEASUREMENTS if not names or module.NAME in names]


async def warm_up(session: Session) -> None:
    """The first request of each kind costs more; no measurement should pay for it."""
    user = await session.new_user("warmup")
    expect(await upload_once(session, user, [os.urandom(4096)], 4096, "warmup.bin"), 201, "warm-up upload")


async def measure_service(session: Session, modules: list) -> dict[str, Any]:
    found: dict[str, Any] = {"load_average_before": {}}
    await session.open_db()
    try:
        await warm_up(session)
        for module in modules:
            progress(f"measuring: {module.NAME}")
            found["load_average_before"][module.NAME] = os.getloadavg()[0]
            found.update(await module.measure(session))
    finally:
        await session.close_db()
    return found


def run_service(session: Session, modules: list) -> dict[str, Any]:
    """Start the service, measure it, stop it (printing its log's tail if anything failed)."""
    server = session.server
    try:
        progress("starting the service: python server.py (embedded database)")
        server.start()
        progress(f"service at {server.url}, pid {server.pid}; database {server.db_uri}")
        return asyncio.run(measure_service(session, modules))
    except BaseException:
        if server.log_path.exists():
            print(f"--- server.log (last lines) ---\n{server.log_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        progress("stopping the service")
        server.stop()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def about(command: str, plan: Plan, only: str) -> dict[str, Any]:
    """What the run was: when, how, on what."""
    import tornado

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=False, capture_output=True, text=True)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "only": only,
        "plan": asdict(plan),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "cpu_model": cpu_model(),
        "git": git.stdout.strip(),
        "run_seconds": time.perf_counter() - STARTED,
    }


def make_session(tmp: Path, plan: Plan, profile_dir: Path | None) -> Session:
    client_dir = tmp / "client"
    client_dir.mkdir()
    progress(f"temp dir {tmp}; generating {plan.large_mb} MB and {plan.concurrent_mb} MB random files")
    large = fixtures.write_random_file(client_dir / "large.bin", plan.large_mb * MB)
    part = fixtures.write_random_file(client_dir / "part.bin", plan.concurrent_mb * MB)
    return Session(plan, Server(tmp, plan), tmp, large, part, profile_dir)


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    args = parse_args(argv, prog)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    plan = Plan.make(args.quick, args.files)
    modules = selected(args.only)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    profile_dir = args.out_dir / "profiles" if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gallery-bench-", dir=args.tmp))
    try:
        session = make_session(tmp, plan, profile_dir)
        results: dict[str, Any] = {"machine": machine.measure(plan, session.server.storage)}
        results.update(run_service(session, modules))
        if args.peer:
            results["peer"] = peer.run(args.peer, tmp, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results.update(about(" ".join([prog, *(argv if argv is not None else sys.argv[1:])]), plan, args.only))
    print(report.write(results, args.out_dir))
    progress(f"wrote {args.out_dir / 'latest.json'} and {args.out_dir / 'latest.md'} in {results['run_seconds']:.0f} s")
    return 0
