"""The imaging engine the service uses: imaging/pillow.py's functions in a process pool.

- Workers are started by a fork server (never forked from the threaded server process), lazily,
  up to `imaging.workers` (0: one per core), at a lower CPU priority than the server, with an
  address-space limit, and replaced after MAX_TASKS jobs.
- At most one job per worker is in flight (an asyncio semaphore), so a job's timeout counts its
  own run, never its wait in a queue.
- A job that runs past `imaging.timeout` has its pool killed and replaced; a worker that dies
  (segfault, out of memory) breaks its pool, which is replaced too. Jobs that were on a broken pool
  are tried once more on the new one; a job that fails twice, or times out, gives no result
  (`JobFailed`), which callers turn into "no thumbnail" (uploads) or a 415 (avatars).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from imaging import AVATAR_SIDE, Avatar, Derived
from settings import ImagingSettings

log = logging.getLogger("gallery.imaging")

MAX_TASKS = 200  # jobs per worker before it is replaced (bounds heap fragmentation)
NICENESS = 5
# Address space per worker: room for a few full-size copies of the largest allowed image (RGBA)
# plus the libraries, never less than MIN_MEMORY.
MIN_MEMORY = 3 << 30
BYTES_PER_PIXEL_BUDGET = 40


class JobFailed(Exception):
    """The job timed out, or its worker died twice."""


def worker_init(memory_limit: int) -> None:
    """Runs once in each new worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def job(name: str, *args: Any) -> Any:
    """Runs in a worker: imaging/pillow.py's function `name` (Pillow and PyAV are loaded in the
    workers only, never in the server process)."""
    from imaging import pillow  # preloaded by the fork server

    return getattr(pillow, name)(*args)


def _reap(processes: list[Any], grace: float) -> None:
    """Wait for processes to exit; kill those still there after `grace` seconds."""
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(1)


class PoolImaging:
    """The `Imaging` engine: thumbnails, avatar crops and variants made in worker processes."""

    def __init__(self, settings: ImagingSettings) -> None:
        self.settings = settings
        self.workers = settings.workers or os.cpu_count() or 1
        self.memory_limit = max(MIN_MEMORY, settings.max_pixels * BYTES_PER_PIXEL_BUDGET)
        self._mp = multiprocessing.get_context("forkserver")
        self._mp.set_forkserver_preload(["imaging.pillow"])
        self._executor: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(self.workers)
        self._closed = False
        self.replaced = 0  # pools replaced after a timeout or a crash (for logs and tests)

    # -- the pool -----------------------------------------------------------------------
    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=self._mp,
                initializer=worker_init,
                initargs=(self.memory_limit,),
                max_tasks_per_child=MAX_TASKS,
            )
        return self._executor

    def _replace(self, executor: ProcessPoolExecutor, why: str) -> None:
        """Kill `executor`'s workers and let the next job start a fresh pool."""
        if self._executor is not executor:
            return  # another job already replaced it
        self._executor = None
        self.replaced += 1
        log.warning("imaging pool replaced: %s", why)
        processes = list((getattr(executor, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., Any], *args: Any, seconds: float | None = None) -> Any:
        """fn(*args) in a worker, within `seconds` (default: imaging.timeout)."""
        limit = seconds if seconds is not None else self.settings.timeout
        for attempt in (1, 2):
            if self._closed:
                raise JobFailed("imaging is shut down")
            async with self._slots:
                executor = self._pool()
                try:
                    future = executor.submit(fn, *args)
                    return await asyncio.wait_for(asyncio.wrap_future(future), limit)
                except TimeoutError:
                    what = args[0] if fn is job else getattr(fn, "__name__", fn)
                    self._replace(executor, f"{what} ran past {limit} s")
                    raise JobFailed("timed out") from None
                except BrokenProcessPool:
                    self._replace(executor, "a worker died")
                    if attempt == 2:
                        raise JobFailed("worker died") from None
        raise JobFailed("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(_reap, processes, 5.0)

    # -- the Imaging interface ------------------------------------------------------------
    async def derive(
        self, source: Path, media_type: str, out_dir: Path, thumbnail: bool, variants: Sequence[int] = ()
    ) -> Derived:
        if not wants_look(media_type):
            return Derived()
        try:
            args = (str(source), media_type, str(out_dir), thumbnail, list(variants), self.settings.max_pixels)
            result = await self.run(job, "derive", *args)
        except JobFailed as exc:
            log.warning("no thumbnail for %s: %s", source.name, exc)
            return Derived()
        except Exception:  # a bug or an exhausted worker (MemoryError): the content is stored all the same
            log.exception("imaging failed for %s", source.name)
            return Derived()
        return Derived(result["width"], result["height"], result["thumbnail"], result["variants"])

    async def avatar(self, source: Path, out: Path, max_side: int = AVATAR_SIDE) -> Avatar:
        try:
            result = await self.run(job, "avatar", str(source), str(out), max_side, self.settings.max_pixels)
        except JobFailed as exc:
            log.warning("avatar not made: %s", exc)
            return Avatar("failed")
        except Exception:
            log.exception("avatar not made")
            return Avatar("failed")
        return Avatar(**result)


def wants_look(media_type: str) -> bool:
    """Content worth a worker's time: raster images, and videos when PyAV is there."""
    if media_type.startswith("image/"):
        return "svg" not in media_type and "xml" not in media_type
    return media_type.startswith("video/")
