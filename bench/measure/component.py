"""XEP-0363 through gallery's upload component: a private Prosody (testbed/prosody.py) with a
`Component "upload.localhost"` pointing at a service of this measurement's own (bench/own.py),
started with the component settings (`GALLERY_XMPP_COMPONENT_*`), and slixmpp users on that
Prosody, as the peer script measures Prosody's own mod_http_file_share:

- slot requests: plan.component_slots (600; --quick 200) raw `<request>` IQs, plan.small_in_flight
  (16) in flight over 2 client connections (2 users, alternating), each through Prosody to the
  component and back;
- 4 KiB PUTs (`PUT /upload/<slot>/<name>`, 16 in flight on keep-alive connections) on
  plan.component_uploads (300; --quick 100) of those slots, then as many 4 KiB uploads with their
  slot request included (slot, then PUT, 16 in flight);
- plan.component_large_repeats (2; --quick 1) PUTs of plan.large_mb MB, each on a slot requested
  before the clock starts (MB/s, beside md5).

One round of each (the peer script also makes one, of 300): the measurement takes about 40 s.
Prosody runs with the peer's tuned network setting (`min_wait = 1e-6`), as the peer column is the
peer script run with `--min-wait 1e-6`. Database commands per request come from the service's
/metrics; Prosody's own CPU is measured beside the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import own, procstat
from bench.client import CommandCount, expect, get_once, run_pool
from bench.common import MB, REQUEST_TIMEOUT, BenchError, progress
from bench.fixtures import check_stored, close_parts, unique_content
from bench.httpclient import Body, Connection, Response
from bench.rows import Figures, Row, commands, db_note
from bench.session import Session
from bench.stats import percentile, with_summary

NAME = "component"
DOMAIN = "localhost"
COMPONENT = f"upload.{DOMAIN}"
SECRET = "bench-component-secret"
ACCOUNTS = {"alice": "alice-bench-pw", "bob": "bob-bench-pw"}
UPLOAD_NS = "urn:xmpp:http:upload:0"
CONTENT_TYPE = "application/octet-stream"
CONNECT_TIMEOUT = 20

CONFIG = f"""\
network_settings = {{ min_wait = 1e-6 }}
modules_enabled = {{ "disco", "saslauth", "ping" }}

VirtualHost "{DOMAIN}"

Component "{COMPONENT}"
    component_secret = "{SECRET}"
"""


def unavailable() -> str | None:
    """Why this measurement cannot run here, or None."""
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        return "Prosody is not installed (bin/setup --dev)"
    try:
        import slixmpp  # noqa: F401
    except ImportError:
        return "slixmpp is not installed"
    return None


@dataclass
class Slot:
    path: str  # the PUT's path on the service
    authorization: str
    get_url: str


class Users:
    """slixmpp users on the private Prosody: raw slot requests, as the peer script sends them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[Any] = []

    async def connect(self) -> None:
        from slixmpp import ClientXMPP

        for user, password in ACCOUNTS.items():
            client = ClientXMPP(f"{user}@{DOMAIN}", password, plugin_config={"feature_mechanisms": {"unencrypted_plain": True}})
            client.enable_direct_tls = False
            client.enable_starttls = False
            client.enable_plaintext = True
            client.connect("127.0.0.1", self.port)
            await client.wait_until("session_start", timeout=CONNECT_TIMEOUT)
            self.clients.append(client)

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.disconnect(wait=1)
            task = getattr(client, "_run_out_filters", None)  # slixmpp's send loop outlives the stream
            if task is not None:
                task.cancel()

    async def slot(self, number: int, size: int) -> Slot:
        """A slot for `size` bytes, asked by user `number % 2`."""
        from slixmpp.exceptions import IqError
        from slixmpp.xmlstream import ET

        client = self.clients[number % len(self.clients)]
        iq = client.make_iq_get(ito=COMPONENT)
        iq.append(
            ET.Element(
                f"{{{UPLOAD_NS}}}request", {"filename": f"c-{number}.bin", "size": str(size), "content-type": CONTENT_TYPE}
            )
        )
        try:
            reply = await iq.send(timeout=30)
        except IqError as exc:
            raise BenchError(f"slot request refused: {exc.iq['error']['condition']}: {exc.iq['error']['text']}") from None
        slot = reply.xml.find(f"{{{UPLOAD_NS}}}slot")
        put = slot.find(f"{{{UPLOAD_NS}}}put")
        headers = {h.get("name"): h.text for h in put.findall(f"{{{UPLOAD_NS}}}header")}
        if list(headers) != ["Authorization"]:
            raise BenchError(f"slot headers {list(headers)}: expected exactly Authorization")
        url = urlsplit(put.get("url"))
        return Slot(url.path, headers["Authorization"], slot.find(f"{{{UPLOAD_NS}}}get").get("url"))


async def put(conn: Connection, slot: Slot, body: Body) -> Response:
    headers = {"Authorization": slot.authorization, "Content-Type": CONTENT_TYPE}
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await conn.request("PUT", slot.path, headers, body)


async def wait_connected(session: Session) -> None:
    """The service's component has its session with Prosody (/healthz says so)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        response = await get_once(session, "/healthz")
        state = json.loads(response.body or b"{}").get("component")
        if state == "connected":
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the component did not connect to Prosody within {CONNECT_TIMEOUT} s: {state}")
        await asyncio.sleep(0.1)


async def meter(session: Session, prosody_pid: int, requests: int, work: Callable[[], Awaitable[list[float]]]) -> dict:
    """Run `work` (returns the latencies of its requests) with the service's CPU, Prosody's CPU
    and the database commands counted."""
    rss, cpu = session.meters()
    prosody_before = procstat.cpu_seconds(prosody_pid)
    async with CommandCount(session) as count:
        with rss, cpu:
            started = time.perf_counter()
            latencies = await work()
            wall = time.perf_counter() - started
    return {
        "requests": requests,
        "seconds": wall,
        "per_s": requests / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "server_cpu_s": cpu.used["server"],
        "db_cpu_s": cpu.used["db"],
        "client_cpu_s": cpu.used["client"],
        "prosody_cpu_s": procstat.cpu_seconds(prosody_pid) - prosody_before,
        "rss_peak_mib": rss.peak_mib,
        **count.figures(requests),
    }


async def limited(count: int, in_flight: int, one: Callable[[int], Awaitable[float]]) -> list[float]:
    """`one(number)` for every number below `count`, `in_flight` at a time; their latencies."""
    numbers = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for number in numbers:
            latencies.append(await one(number))

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


async def slot_round(session: Session, users: Users, pid: int) -> tuple[dict, list[Slot]]:
    """plan.component_slots slot requests, 16 in flight; the slots, for the PUTs."""
    plan = session.plan
    slots: dict[int, Slot] = {}

    async def one(number: int) -> float:
        started = time.perf_counter()
        slots[number] = await users.slot(number, plan.small_size)
        return time.perf_counter() - started

    found = await meter(session, pid, plan.component_slots, lambda: limited(plan.component_slots, plan.small_in_flight, one))
    return found, [slots[number] for number in range(plan.component_slots)]


async def put_round(session: Session, slots: list[Slot], payload: bytes) -> dict:
    """A 4 KiB PUT on each slot fetched earlier, 16 in flight on keep-alive connections."""

    async def one(conn: Connection, number: int) -> Response:
        response = await put(conn, slots[number], [payload])
        if response.status != 201:
            expect(response, 201, "4 KiB PUT through the component")
        return response

    return await run_pool(session, session.plan.small_in_flight, len(slots), one)


async def upload_round(session: Session, users: Users, pid: int, base: int, payload: bytes) -> dict:
    """plan.component_uploads 4 KiB uploads with their slot request: slot, then PUT, 16 in flight."""
    plan = session.plan
    pool = [session.connection() for _ in range(plan.small_in_flight)]

    async def one(number: int) -> float:
        conn = pool.pop()
        try:
            started = time.perf_counter()
            slot = await users.slot(base + number, plan.small_size)
            response = await put(conn, slot, [payload])
            if response.status != 201:
                expect(response, 201, "4 KiB upload through the component")
            return time.perf_counter() - started
        finally:
            pool.append(conn)

    try:
        count = plan.component_uploads
        return await meter(session, pid, count, lambda: limited(count, plan.small_in_flight, one))
    finally:
        for conn in pool:
            conn.close()


async def large_put(session: Session, users: Users, number: int, verify: bool) -> dict:
    """One plan.large_mb MB PUT of new content on a slot asked for before the clock starts."""
    size = session.plan.large_mb * MB
    slot = await users.slot(number, size)
    parts = unique_content(session.large, size)
    conn = session.connection()
    rss, cpu = session.meters()
    try:
        async with CommandCount(session) as count:
            with rss, cpu:
                started = time.perf_counter()
                response = await put(conn, slot, parts)
                seconds = time.perf_counter() - started
        check_stored(expect(response, 201, f"{size} bytes PUT through the component"), size, parts, verify)
    finally:
        conn.close()
        close_parts(parts)
    return {
        "seconds": seconds,
        "mb_s": size / MB / seconds,
        "server_cpu_s_per_gb": cpu.used["server"] / (size / 1e9),
        "rss_peak_mib": rss.peak_mib,
        **count.figures(1),
    }


async def through_component(session: Session, users: Users, pid: int) -> dict:
    plan = session.plan
    await wait_connected(session)
    await users.connect()
    payload = os.urandom(plan.small_size)
    # the first requests of each kind cost more: a few slots and PUTs before any clock runs
    warm = [await users.slot(number, plan.small_size) for number in range(-8, 0)]
    conn = session.connection()
    try:
        for slot in warm:
            expect(await put(conn, slot, [payload]), 201, "warm-up PUT through the component")
    finally:
        conn.close()
    slots, issued = await slot_round(session, users, pid)
    puts = await put_round(session, issued[: plan.component_uploads], payload)
    uploads = await upload_round(session, users, pid, plan.component_slots, payload)
    progress(
        f"component: {slots['per_s']:.0f} slots/s (p99 {slots['p99_ms']:.0f} ms), "
        f"4 KiB PUTs {puts['per_s']:.0f}/s, slot + PUT {uploads['per_s']:.0f}/s"
    )
    base = plan.component_slots + plan.component_uploads
    large = []
    for number in range(plan.component_large_repeats):
        large.append(await large_put(session, users, base + number, verify=number == 0))
        progress(f"component: PUT {plan.large_mb} MB #{number + 1}: {large[-1]['mb_s']:.1f} MB/s")
    return {
        "slots": with_summary([slots]),
        "puts": with_summary([puts]),
        "uploads": with_summary([uploads]),
        "large": with_summary(large),
    }


async def measure(session: Session) -> dict:
    why = unavailable()
    if why is not None:
        progress(f"component: not measured: {why}")
        return {"component": {"available": False, "why": why}}
    from testbed.prosody import ProsodyProcess

    with tempfile.TemporaryDirectory(prefix="gallery-bench-prosody-", dir=session.tmp) as d:
        prosody = ProsodyProcess(Path(d))
        prosody.write_config(CONFIG)
        for user, password in ACCOUNTS.items():
            await asyncio.to_thread(prosody.register, user, password, DOMAIN)
        await asyncio.to_thread(prosody.start)
        version = prosody.version()
        progress(f"component: Prosody {version}, pid {prosody.pid}, c2s {prosody.port}, components {prosody.component_port}")
        users = Users(prosody.port)
        settings = {
            "GALLERY_XMPP_COMPONENT_JID": COMPONENT,
            "GALLERY_XMPP_COMPONENT_SECRET": SECRET,
            "GALLERY_XMPP_COMPONENT_HOST": prosody.host,
            "GALLERY_XMPP_COMPONENT_PORT": str(prosody.component_port),
        }
        try:
            found = await own.with_service(session, NAME, settings, lambda s: through_component(s, users, prosody.pid))
        finally:
            await users.close()
            await asyncio.to_thread(prosody.stop)
    found["available"] = True
    found["prosody_version"] = version
    return {"component": found}


# -- the table ------------------------------------------------------------------------------


def rows(figures: Figures) -> list[Row]:
    found = figures.get("component")
    if not found:
        return []
    if not found.get("available"):
        return [Row(f"XEP-0363 through the component: not measured ({found.get('why')})", None, "")]
    plan = figures.plan
    slots, puts, uploads, large = found["slots"], found["puts"], found["uploads"], found["large"]
    prosody_ms = slots["median_prosody_cpu_s"] / slots["median_requests"] * 1000
    return [
        Row(
            f"component: {plan['component_slots']} slot requests, {plan['small_in_flight']} in flight on 2 XMPP connections",
            slots["median_per_s"],
            "slots/s",
            peer=figures.peer_figure("small", "slots_per_s"),
            commands=commands(slots),
            note=f"{db_note(slots)}; Prosody routing {prosody_ms:.1f} ms CPU per slot",
        ),
        Row("  component slot request latency p50", slots["median_p50_ms"], "ms"),
        Row("  component slot request latency p99", slots["median_p99_ms"], "ms"),
        Row(
            f"component: {plan['component_uploads']} PUTs of 4 KiB on slots fetched earlier, {plan['small_in_flight']} in flight",
            puts["median_per_s"],
            "uploads/s",
            "durable 4 KiB writes/s",
            figures.machine["durable_small_writes_per_s"],
            figures.peer_figure("small", "uploads_per_s_slot_excluded"),
            commands(puts),
            db_note(puts),
        ),
        Row(
            f"component: {plan['component_uploads']} uploads of 4 KiB, slot + PUT, {plan['small_in_flight']} in flight",
            uploads["median_per_s"],
            "uploads/s",
            "durable 4 KiB writes/s",
            figures.machine["durable_small_writes_per_s"],
            figures.peer_figure("small", "uploads_per_s_slot_included"),
            commands(uploads),
            f"p99 {uploads['median_p99_ms']:.0f} ms; {db_note(uploads)}",
        ),
        Row(
            f"component: PUT {plan['large_mb']} MB on a slot, one file",
            large["median_mb_s"],
            "MB/s",
            "md5, one core",
            figures.machine["md5_mb_s"],
            figures.peer_figure("large", "put_mb_s"),
            commands(large),
            f"server CPU {large['median_server_cpu_s_per_gb']:.2f} s/GB",
        ),
    ]


def memory_rows(figures: Figures) -> list[Row]:
    found = figures.get("component")
    if not found or not found.get("available"):
        return []
    return [
        Row(
            f"peak server RSS during the {figures.plan['large_mb']} MB PUT through the component",
            found["large"]["max_rss_peak_mib"],
            "MiB",
            peer=figures.peer_figure("large", "peak_rss_mib"),
        )
    ]
