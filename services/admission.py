"""How many uploads may be in flight at once, per user and in the whole deployment.

Every admitted upload holds a lease in MongoDB (models/leases.py), so the limits hold across
worker processes and machines. A process renews its leases every RENEW_SECONDS; a process that
dies stops renewing, and its leases stop counting LEASE_SECONDS later.

The per-user limit is exact: an upload takes one of its owner's numbered slots, each a document
with a unique `_id`, so no more than that many exist. Every admitted upload holds exactly one such
slot from before it is admitted until it ends, so the slots of all owners, counted, are the uploads
in flight in the deployment: the global limit inserts (the slot) first and counts second. Of any
set of admitted uploads in flight at one moment, the one whose slot was inserted last counted
after every other slot of the set had been inserted and before any of them was given back, so it
was refused if they were more than the limit; the global limit is never overrun (in a burst past
the limit, racing uploads may all be refused: 503 with Retry-After, as for any overload). An upload
costs three lease commands: the slot's insert, the count (one for the uploads entering together:
a count that began after a slot was inserted is as good for it as its own), the slot's delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from collections import Counter

from models.db import utcnow
from models.leases import Leases
from services.errors import RateLimited, Unavailable

log = logging.getLogger("gallery.admission")

LEASE_SECONDS = 30  # a lease whose holder stopped renewing it counts this long
RENEW_SECONDS = 10
SLOT_TRIES = 3  # a user at the limit: look again this many times ...
SLOT_WAIT = 0.05  # ... this far apart (a lease given back a moment ago elsewhere), then 429


class UploadGate:
    def __init__(self, leases: Leases, per_user: int, total: int) -> None:
        self.leases = leases
        self.per_user = per_user
        self.total = total
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.active: Counter[str] = Counter()  # this process's admitted uploads, per owner
        self._held: dict[str, list[str]] = {}  # owner -> the slots its uploads hold
        # every slot this process has taken and not given back yet (counted: a slot given back
        # can be taken again by this process before the give-back's call has returned)
        self._leases: Counter[str] = Counter()
        self._pending: dict[asyncio.Task, str] = {}  # leases being given back -> their owner
        self._renewer: asyncio.Task | None = None
        self.closed = False  # shutting down: no new uploads
        self._idle = asyncio.Event()
        self._idle.set()

    @staticmethod
    def _expiry() -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=LEASE_SECONDS)

    async def enter(self, owner: str) -> None:
        """Admit one more upload for `owner`, or refuse with 429 (theirs) / 503 (everyone's)."""
        if self.closed:
            raise Unavailable("the service is shutting down", retry_after=5)
        # this process's own uploads are a part of the deployment's: refuse without asking
        if self.active[owner] >= self.per_user:
            raise RateLimited(f"at most {self.per_user} uploads at once", 1)
        if self.active.total() >= self.total:
            raise Unavailable("too many uploads in progress", retry_after=1)
        # An upload that just ended gives its lease back after its answer went out: wait for this
        # process's (the client's next upload may already be here), and briefly for another's.
        mine = [task for task, who in self._pending.items() if who == owner]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)
        slot = None
        for attempt in range(SLOT_TRIES):
            held = self._held.get(owner, ())  # this process's own: known to be held, not tried
            slot = await self.leases.take_slot(owner, self.per_user, self.holder, utcnow(), self._expiry(), set(held))
            if slot is not None:
                break
            if attempt + 1 < SLOT_TRIES:
                await asyncio.sleep(SLOT_WAIT)
        if slot is None:
            raise RateLimited(f"at most {self.per_user} uploads at once", 1)
        self._leases[slot] += 1
        try:
            # the slot just taken is counted too: insert first, count second (the docstring)
            if await self.leases.count(utcnow()) > self.total:
                raise Unavailable("too many uploads in progress", retry_after=1)
        except BaseException:
            await asyncio.shield(self._drop(slot))
            raise
        self.active[owner] += 1
        self._held.setdefault(owner, []).append(slot)
        self._idle.clear()
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew())

    def leave(self, owner: str) -> None:
        """The upload is over: its lease is given back (in the background)."""
        held = self._held.get(owner)
        if not held:
            return
        slot = held.pop()
        if not held:
            del self._held[owner]
        self.active[owner] -= 1
        if self.active[owner] <= 0:
            del self.active[owner]
        task = asyncio.ensure_future(self._drop(slot))
        self._pending[task] = owner
        task.add_done_callback(self._given_back)

    def _given_back(self, task: asyncio.Task) -> None:
        self._pending.pop(task, None)
        if not self.active and not self._pending:
            self._idle.set()

    async def _drop(self, slot: str) -> None:
        try:
            await self.leases.drop(slot, self.holder)
        except Exception as exc:  # the lease expires on its own (it is not renewed any more)
            log.warning("could not give back an upload lease: %s", exc)
        finally:
            self._leases[slot] -= 1
            if self._leases[slot] <= 0:
                del self._leases[slot]

    async def _renew(self) -> None:
        """Keep this process's leases alive while it holds any."""
        while self._held:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self.leases.renew(self.holder, set(self._leases), self._expiry())
            except Exception as exc:
                log.warning("could not renew upload leases: %s", exc)

    async def drain(self, grace: float) -> int:
        """Refuse new uploads and wait up to `grace` seconds for those in flight; returns how
        many were still running when the time was up."""
        self.closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        return self.active.total()

    async def close(self) -> None:
        """At shutdown, after the connections are closed: give back whatever is still held."""
        if self._renewer is not None:
            self._renewer.cancel()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        self._held.clear()
        with contextlib.suppress(Exception):
            await self.leases.drop_all(self.holder, set(self._leases))
        self._leases.clear()
