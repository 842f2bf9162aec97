"""Who works on this database: every running server process, and fsck while it repairs.

Each keeps a document in `servers` up to date (models/servers.py). fsck needs every server
stopped (it removes content no file references yet and every staging file), and a server must not
start while fsck runs. Both sides announce themselves first and look for the other second, so of a
server and an fsck starting at the same moment at least one sees the other and gives up (both may:
then neither runs, which is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from models.db import utcnow
from models.servers import FSCK, SERVER, Servers

log = logging.getLogger("gallery.presence")

RENEW_SECONDS = 10
ALIVE_SECONDS = 30  # a process that stopped renewing (it died) counts this long
LOCK_WAIT = 0.2  # seconds between looks at a lock another process holds

T = TypeVar("T")


class Busy(Exception):
    """The other side is at work on this database."""


class Presence:
    def __init__(self, servers: Servers, role: str = SERVER) -> None:
        self.servers = servers
        self.role = role
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: asyncio.Task | None = None

    async def _announce(self) -> None:
        now = utcnow()
        expires = now + dt.timedelta(seconds=ALIVE_SECONDS)
        await self.servers.announce(self.holder, self.role, self.host, os.getpid(), _pid_space(), now, expires)

    async def start(self) -> None:
        """Announce this process, then make sure the other side is not at work: raises Busy
        (naming them) after taking the announcement back."""
        await self._announce()
        other = FSCK if self.role == SERVER else SERVER
        busy = [f"{doc['host']}:{doc['pid']}" for doc in await self.servers.alive(utcnow(), other) if not _gone(doc)]
        if busy:
            await self.stop()
            raise Busy(busy)
        self._task = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._announce()
            except Exception as exc:  # the database is away: try again next time
                log.warning("could not renew this process's presence: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.servers.leave(self.holder)


def _pid_space() -> int | None:
    """This process's PID namespace (containers with the host's name have their own)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _gone(doc: dict) -> bool:
    """A process of this host and PID namespace that no longer exists (killed: its document has
    not expired yet)."""
    if doc.get("host") != socket.gethostname() or doc.get("pid_space") != _pid_space():
        return False
    try:
        os.kill(doc["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's)
        return False
    return False


async def exclusively(servers: Servers, name: str, holder: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` holding the deployment-wide lock `name`: one process at a time (the others
    wait for it), such as the start-up migration, which recounts every counter and must not run
    while another process of the deployment already serves uploads."""
    while not await servers.take_lock(name, holder, utcnow(), utcnow() + dt.timedelta(seconds=ALIVE_SECONDS)):  # noqa: ASYNC110 - another process holds it
        await asyncio.sleep(LOCK_WAIT)

    async def renew() -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            with contextlib.suppress(Exception):
                await servers.renew_lock(name, holder, utcnow() + dt.timedelta(seconds=ALIVE_SECONDS))

    renewer = asyncio.ensure_future(renew())
    try:
        return await work()
    finally:
        renewer.cancel()
        with contextlib.suppress(Exception):
            await servers.drop_lock(name, holder)
