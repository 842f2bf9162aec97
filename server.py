"""gallery: file sharing for XMPP users.

    python server.py [--config settings.yaml]          run the service
    python server.py [--config settings.yaml] fsck     repair the store after a crash

Start-up order: settings -> storage -> database (embedded if no mongodb.uri) -> imaging ->
XMPP -> HTTP. Shutdown runs the same list backwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
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
from services.fsck import fsck
from settings import HERE, Settings, SettingsError
from storage.local import LocalStore
from xmpp.client import XmppClient
from xmpp.component import UploadComponent

log = logging.getLogger("gallery")

# The largest request body outside uploads (which raise it per request).
API_BODY_LIMIT = 1 << 20
READ_CHUNK = 256 * 1024
# Threads for blocking file work (hashing, writes, fsyncs, reads): asyncio's default of
# cores + 4 (6 here) made 16 uploads in flight queue behind each other's fsyncs.
IO_THREADS = 32


class Service:
    """Owns every long-lived part and the order they start and stop in."""

    def __init__(self, settings: Settings, data_dir: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = data_dir or HERE / "data"
        # the embedded database's directory: mongodb.embedded_path, or <data_dir>/db when given
        self.db_dir = data_dir / "db" if data_dir is not None else settings.embedded_db_path
        self.embedded: EmbeddedMongo | None = None
        self.db: Database | None = None
        self.http: HTTPServer | None = None
        self.parts: Parts | None = None
        self.ctx: Context | None = None
        self.expiry: ExpirySweeper | None = None

    @property
    def url(self) -> str:
        return self.settings.public_url

    async def start(self) -> None:
        s = self.settings
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="gallery-io"))
        store = LocalStore(s.storage_path)
        store.prepare()
        removed = await store.clean_staging(0)  # nothing is in flight before we listen
        if removed:
            log.info("removed %d stale temp files", removed)
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
        self.parts = Parts(settings=s, db=self.db, store=store, imaging=PoolImaging(s.imaging))
        migrated = await self.parts.files.migrate(self.parts.file_ids)
        if migrated:
            log.info("gave %d files of an earlier version integer ids", migrated)

        sockets = bind_sockets(s.server.port, s.server.host)
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
        if self.parts is not None and self.parts.xmpp is not None:
            await self.parts.xmpp.stop()
        if self.parts is not None:
            await self.parts.imaging.close()
        if self.db is not None:
            await self.db.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def serve(settings: Settings) -> None:
    service = Service(settings)
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
    try:
        parts = Parts(settings=settings, db=db, store=LocalStore(settings.storage_path))
        parts.store.prepare()
        report = await fsck(parts)
        for line in report.lines():
            print(line)
        print("store is consistent" if report.repaired else "store could NOT be fully repaired")
        return 0 if report.repaired else 1
    finally:
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
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
