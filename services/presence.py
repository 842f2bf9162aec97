"""A running server process says so in the database, so that maintenance that needs every
process stopped (fsck) can refuse to run beside one."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket

from models.db import utcnow
from models.servers import Servers

log = logging.getLogger("gallery.presence")

RENEW_SECONDS = 10
ALIVE_SECONDS = 30  # a process that stopped renewing (it died) counts this long


class Presence:
    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: asyncio.Task | None = None

    async def _announce(self) -> None:
        now = utcnow()
        await self.servers.announce(self.holder, self.host, os.getpid(), now, now + dt.timedelta(seconds=ALIVE_SECONDS))

    async def start(self) -> None:
        await self._announce()
        self._task = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._announce()
            except Exception as exc:  # the database is away: try again next time
                log.warning("could not renew this server's presence: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.servers.leave(self.holder)


def _gone(doc: dict) -> bool:
    """A process of this host that no longer exists (killed: its document has not expired yet)."""
    if doc.get("host") != socket.gethostname():
        return False
    try:
        os.kill(doc["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's)
        return False
    return False


async def running(servers: Servers) -> list[str]:
    """The server processes running against this database now, as `host:pid`."""
    return [f"{doc['host']}:{doc['pid']}" for doc in await servers.alive(utcnow()) if not _gone(doc)]
