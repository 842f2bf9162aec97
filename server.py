"""gallery: file sharing for XMPP users.

    python server.py [--config settings.yaml]          run the service
    python server.py [--config settings.yaml] fsck     repair the store after a crash

Start-up order: settings -> storage -> database (embedded if no mongodb.uri) -> imaging ->
XMPP -> HTTP. Shutdown runs the same list backwards.

With server.processes other than 1 the first process is a supervisor: it starts the embedded
database (if any) and binds the listening socket, then forks the workers, each of which runs a
`Service` on the inherited socket; it replaces a worker that dies and, on SIGTERM, passes the
signal on, waits for every worker to drain, and exits 0. It holds no event loop and no client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import settings as settings_module
from handlers import GalleryApp
from imaging.pool import PoolImaging
from models.db import Database
from models.embedded import EmbeddedMongo
from services import evaluation
from services.context import Context, Parts
from services.expiry import ExpirySweeper
from services.fsck import STALE_TEMP_SECONDS, fsck
from services.presence import ALIVE_SECONDS, FSCK, Busy, Presence, exclusively
from settings import HERE, Settings, SettingsError
from storage import ContentStore
from storage.backends import close_store, open_store
from xmpp.client import XmppClient
from xmpp.component import UploadComponent

log = logging.getLogger("gallery")

# The largest request body outside uploads (which raise it per request).
API_BODY_LIMIT = 1 << 20
READ_CHUNK = 256 * 1024
# Threads for blocking file work (hashing, writes, fsyncs, reads): asyncio's default of
# cores + 4 (6 here) made 16 uploads in flight queue behind each other's fsyncs.
IO_THREADS = 32


class StartRefused(Exception):
    """The service must not start now (said in one line, not as a traceback)."""


class Service:
    """Owns every long-lived part and the order they start and stop in."""

    def __init__(self, settings: Settings, data_dir: Path | None = None, sockets: list[socket.socket] | None = None) -> None:
        self.settings = settings
        self.sockets = sockets  # already bound (a worker of several); None: bind server.port
        self.data_dir = data_dir or HERE / "data"
        # the embedded database's directory: mongodb.embedded_path, or <data_dir>/db when given
        self.db_dir = data_dir / "db" if data_dir is not None else settings.embedded_db_path
        self.embedded: EmbeddedMongo | None = None
        self.db: Database | None = None
        self.store: ContentStore | None = None
        self.http: HTTPServer | None = None
        self.parts: Parts | None = None
        self.ctx: Context | None = None
        self.expiry: ExpirySweeper | None = None
        self.presence: Presence | None = None

    @property
    def url(self) -> str:
        return self.settings.public_url

    async def start(self) -> None:
        s = self.settings
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="gallery-io"))
        uri = s.mongodb.uri
        if not uri:
            self.embedded = EmbeddedMongo(self.db_dir)
            uri = await asyncio.to_thread(self.embedded.start)
            log.warning(
                "EVALUATION DATABASE: started embedded SecantusDB (data in %s); set mongodb.uri for production",
                self.embedded.data_dir,
            )
        self.db = Database(uri, s.mongodb.database, s.mongodb.timeout)
        await self.db.ensure_indexes()
        self.store = store = open_store(s, uri)
        await asyncio.to_thread(store.prepare)
        self.parts = Parts(settings=s, db=self.db, store=store, imaging=PoolImaging(s.imaging))
        presence = Presence(self.parts.servers)
        try:
            await presence.start()  # from now on fsck refuses to run
        except Busy as exc:
            raise StartRefused(
                f"fsck is repairing this database ({', '.join(exc.args[0])}): start the service when it is done"
            ) from None
        self.presence = presence
        # Only staging files older than the stale age: another process (a worker beside this one,
        # a server on another port or host sharing the store) may have uploads in flight now.
        removed = await store.clean_staging(STALE_TEMP_SECONDS)
        if removed:
            log.info("removed %d stale temp files", removed)
        # one process of the deployment at a time; the others wait before they serve
        parts = self.parts
        migrated = await exclusively(parts.servers, "migrate", presence.holder, lambda: parts.files.migrate(parts.file_ids))
        if migrated:
            log.info("gave %d files of an earlier version integer ids", migrated)

        sockets = self.sockets or bind_sockets(s.server.port, s.server.host)
        s.server.port = sockets[0].getsockname()[1]
        # the imaging pool starts its worker processes on the first job
        xmpp = XmppClient(s.xmpp) if s.xmpp.jid else None
        component = UploadComponent(s.xmpp.component, s.limits.max_file_size) if s.xmpp.component.jid else None
        self.parts.xmpp = xmpp
        self.parts.component = component
        self.ctx = Context.build(self.parts)
        # removes expired files now and every retention.sweep_interval, in every process
        self.expiry = ExpirySweeper(
            self.ctx.files, s.retention.sweep_interval, s.retention.sweep_batch, counted=self.ctx.metrics.expired.inc
        )
        self.expiry.start()
        if xmpp is not None:
            await xmpp.start()  # waits briefly for the session; without one, code requests answer 503
        elif evaluation.enabled(s):
            await evaluation.start(self.ctx.accounts)  # a first look: a login code on the console
        if component is not None:
            await component.start()  # likewise; until it is connected, no client can ask for a slot
            self.ctx.slots.start()  # ends expired slots and hands their reservations back
        self.http = HTTPServer(
            GalleryApp(self.ctx),
            max_body_size=API_BODY_LIMIT,
            max_buffer_size=4 * READ_CHUNK,
            chunk_size=READ_CHUNK,
            idle_connection_timeout=s.server.idle_connection_timeout,
            body_timeout=s.server.body_timeout,
            max_header_size=s.server.max_header_size,
            decompress_request=False,
            xheaders=s.server.xheaders,
        )
        self.http.add_sockets(sockets)
        log.info("gallery serving on %s (listening on %s:%d)", self.url, s.server.host, s.server.port)

    async def stop(self) -> None:
        if self.http is not None:
            self.http.stop()  # no new connections
            if self.ctx is not None:
                left = await self.ctx.files.gate.drain(self.settings.server.shutdown_grace)
                if left:
                    log.warning("shutdown grace over: cutting off %d uploads in flight", left)
            await self.http.close_all_connections()
        if self.expiry is not None:
            await self.expiry.stop()
        if self.parts is not None and self.parts.component is not None:
            await self.parts.component.stop()
        if self.ctx is not None:
            await self.ctx.slots.stop()
        if self.ctx is not None:
            await self.ctx.files.gate.close()  # leases still held (the cut-off uploads)
        if self.parts is not None and self.parts.xmpp is not None:
            await self.parts.xmpp.stop()
        if self.parts is not None:
            await self.parts.imaging.close()
        if self.store is not None:
            await asyncio.to_thread(close_store, self.store)
        if self.presence is not None:
            await self.presence.stop()
        if self.db is not None:
            await self.db.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    service = Service(settings, sockets=sockets)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await service.start()
        await stopping.wait()
        log.info("stopping")
    finally:
        await service.stop()


async def repair(settings: Settings) -> int:
    """fsck: run with the service stopped."""
    embedded = None
    uri = settings.mongodb.uri
    if not uri:
        embedded = EmbeddedMongo(settings.embedded_db_path)
        uri = await asyncio.to_thread(embedded.start)
    db = Database(uri, settings.mongodb.database)
    store = open_store(settings, uri)
    presence: Presence | None = None
    try:
        parts = Parts(settings=settings, db=db, store=store)
        presence = Presence(parts.servers, FSCK)  # stopping it again after a refusal does nothing
        try:
            await presence.start()  # from now on no server starts
        except Busy as exc:
            busy = exc.args[0]
            print(
                f"gallery: {len(busy)} server processes are running against this database ({', '.join(busy)}): "
                f"stop every one first (a process that died stops counting {ALIVE_SECONDS} s after)",
                file=sys.stderr,
            )
            return 2
        await asyncio.to_thread(store.prepare)
        # every process is stopped: no upload is in flight, every staging file is left over
        report = await fsck(parts, temp_age=0)
        for line in report.lines():
            print(line)
        print("store is consistent" if report.repaired else "store could NOT be fully repaired")
        return 0 if report.repaired else 1
    finally:
        if presence is not None:
            await presence.stop()
        close_store(store)
        await db.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="server.py", description="gallery file sharing service")
    parser.add_argument("--config", type=Path, default=None, help="settings file (default: settings.yaml beside server.py)")
    parser.add_argument("command", nargs="?", choices=("serve", "fsck"), default="serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_module.load(args.config)
    except SettingsError as exc:
        print(f"gallery: invalid setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "fsck":
        return asyncio.run(repair(settings))
    if settings.processes > 1:
        for handler in logging.getLogger().handlers:  # which worker said it
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        return Supervisor(settings).run()
    try:
        asyncio.run(serve(settings))
    except StartRefused as exc:
        print(f"gallery: {exc}", file=sys.stderr)
        return 1
    return 0


# -- several worker processes ------------------------------------------------------------------
RESPAWN_PAUSE = 1.0  # seconds before replacing a worker that died within its first seconds
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a worker: SIGTERM (a drain) when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Forks `settings.processes` workers on one listening socket and keeps that many alive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.processes
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
        self.stopping = False
        self.embedded: EmbeddedMongo | None = None
        self.metrics_dir: Path | None = None

    def run(self) -> int:
        s = self.settings
        if s.imaging.workers == 0:  # the machine's cores shared out, not a pool per core per worker
            s.imaging.workers = max(1, (os.cpu_count() or 1) // self.count)
        if not s.mongodb.uri:
            self.embedded = EmbeddedMongo(s.embedded_db_path)
            s.mongodb.uri = self.embedded.start()
            log.warning(
                "EVALUATION DATABASE: started embedded SecantusDB (data in %s); set mongodb.uri for production",
                self.embedded.data_dir,
            )
        # every worker's counters in one directory, summed by /metrics (prometheus multiprocess)
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="gallery-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        try:
            sockets = bind_sockets(s.server.port, s.server.host)
            s.server.port = sockets[0].getsockname()[1]
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            log.info("starting %d worker processes (imaging: %d each)", self.count, s.imaging.workers)
            for index in range(self.count):
                self._spawn(index, sockets)
            self._watch(sockets)
            log.info("all workers stopped")
            return 0
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if self.embedded is not None:
                self.embedded.stop()

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("stopping: draining %d workers", len(self.workers))
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self, index: int, sockets: list[socket.socket]) -> None:
        signals = {signal.SIGTERM, signal.SIGINT}
        # no signal between the fork and the worker's own handlers, nor before its pid is known
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in signals:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
                _die_with_parent()
                code = self._work(index, sockets)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        log.info("worker %d started (pid %d)", index, pid)

    def _work(self, index: int, sockets: list[socket.socket]) -> int:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # chosen at import, before the directory was set
        s = self.settings
        if s.xmpp.jid and "/" in s.xmpp.jid:  # one session per worker: resources must differ
            s.xmpp.jid = f"{s.xmpp.jid}-{index}"
        if index != 0:  # the XMPP server takes one connection per component: worker 0 keeps it
            s.xmpp.component.jid = ""
        asyncio.run(serve(s, sockets))
        return 0

    def _watch(self, sockets: list[socket.socket]) -> None:
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.workers:
                continue
            index, started = self.workers.pop(pid)
            if self.stopping:
                log.info("worker %d (pid %d) %s", index, pid, _exit_status(status))
                continue
            log.error("worker %d (pid %d) %s; starting a new one", index, pid, _exit_status(status))
            if time.monotonic() - started < 5:
                time.sleep(RESPAWN_PAUSE)  # do not spin on a worker that cannot start
            if not self.stopping:
                self._spawn(index, sockets)


if __name__ == "__main__":
    sys.exit(main())
