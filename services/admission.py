"""How many uploads may be in flight at once, per user and in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from services.errors import RateLimited, Unavailable


class UploadGate:
    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self.active: Counter[str] = Counter()
        self.closed = False  # shutting down: no new uploads
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self, owner: str) -> None:
        """Admit one more upload for `owner`, or refuse with 429 (theirs) / 503 (everyone's)."""
        if self.closed:
            raise Unavailable("the service is shutting down", retry_after=5)
        if self.active[owner] >= self.per_user:
            raise RateLimited(f"at most {self.per_user} uploads at once", 1)
        if self.active.total() >= self.total:
            raise Unavailable("too many uploads in progress", retry_after=1)
        self.active[owner] += 1
        self._idle.clear()

    async def drain(self, grace: float) -> int:
        """Refuse new uploads and wait up to `grace` seconds for those in flight; returns how
        many were still running when the time was up."""
        self.closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        return self.active.total()

    def leave(self, owner: str) -> None:
        self.active[owner] -= 1
        if self.active[owner] <= 0:
            del self.active[owner]
        if not self.active:
            self._idle.set()
