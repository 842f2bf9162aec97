"""The expiry sweeper: removes files whose `expires_at` has come, as a delete removes them.

From `expires_at` on a file's links answer 404 (models/files.py `by_slot`); the sweeper then
removes it through the file manager's delete path: the file document goes, the owner's quota and
counters move back, and content (with its thumbnails) that no other file references leaves
storage. It runs every `retention.sweep_interval` seconds in every process: each run reads the
expired files through the `expires_at` index in batches of `retention.sweep_batch`, and of two
processes removing the same file only the one whose delete removed the document releases
anything, so running it everywhere at once removes each file once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from models.db import utcnow
from services.files import FileManager

log = logging.getLogger("gallery.expiry")

# One run never removes more than this many batches, so a backlog cannot hold a process's loop
# (the next run goes on where this one stopped).
MAX_BATCHES = 50


class ExpirySweeper:
    def __init__(self, manager: FileManager, interval: float, batch: int, counted: Callable[[int], object] | None = None) -> None:
        self.manager = manager
        self.counted = counted  # told how many files each run removed (the metrics counter)
        self.interval = interval
        self.batch = batch
        self.removed = 0  # files this process removed since it started
        self._task: asyncio.Task | None = None

    async def sweep(self) -> int:
        """Remove every expired file (up to MAX_BATCHES batches); returns how many this call
        removed (files another process removed meanwhile are not counted)."""
        removed = 0
        for _ in range(MAX_BATCHES):
            now = utcnow()
            docs = await self.manager.expired(now, self.batch)
            for doc in docs:
                if await self.manager.remove(doc):
                    removed += 1
            if len(docs) < self.batch:
                break
        if removed:
            log.info("removed %d expired files", removed)
            if self.counted is not None:
                self.counted(removed)
        self.removed += removed
        return removed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down, the volume failed: try again later
                log.warning("expiry sweep failed (next try in %ss): %s", self.interval, exc)
            await asyncio.sleep(self.interval)
