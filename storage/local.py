"""Local filesystem blob store.

Layout under the storage root:
    tmp/<random>                 uploads in flight (same filesystem, so commit is a rename)
    blobs/<aa>/<bb>/<sha256>     content, one file per distinct sha256
    thumbs/<aa>/<bb>/<sha256>/   derived images of that content, removed with it
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fan(sha256: str) -> Path:
    return Path(sha256[:2], sha256[2:4], sha256)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.blobs = root / "blobs"
        self.thumbs = root / "thumbs"
        self._locks: dict[str, asyncio.Lock] = {}

    def prepare(self) -> None:
        for path in (self.tmp, self.blobs, self.thumbs):
            path.mkdir(parents=True, exist_ok=True)

    def check(self) -> bool:
        """The volume is there and a file can be written to it (for /healthz)."""
        try:
            fd, path = self.new_temp()
            os.close(fd)
            path.unlink()
        except OSError:
            return False
        return self.blobs.is_dir()

    # -- paths ---------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / _fan(sha256)

    def relative(self, path: Path) -> str:
        """A stored file's path below the storage root (for X-Accel-Redirect)."""
        return path.relative_to(self.root).as_posix()

    def thumb_dir(self, sha256: str) -> Path:
        return self.thumbs / _fan(sha256)

    def new_temp(self) -> tuple[int, Path]:
        path = self.tmp / secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        return fd, path

    # -- the commit protocol ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def locked(self, sha256: str) -> AsyncIterator[None]:
        """Serialise reference changes and file moves for one content within this process, so a
        delete that removes the last reference cannot unlink a blob a new upload just placed."""
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(sha256, None)

    async def place(self, temp: Path, sha256: str) -> None:
        """Move a synced temp file into place unless that content is already stored."""
        await asyncio.to_thread(self._place, temp, sha256)

    def _place(self, temp: Path, sha256: str) -> None:
        target = self.blob_path(sha256)
        if target.exists():
            temp.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temp, target)
        fsync_dir(target.parent)

    async def remove(self, sha256: str) -> None:
        """Delete a blob and its derived images."""
        await asyncio.to_thread(self._remove, sha256)

    def _remove(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        shutil.rmtree(self.thumb_dir(sha256), ignore_errors=True)

    # -- reading -------------------------------------------------------------------------
    async def size(self, path: Path) -> int | None:
        """A stored file's size; None when it is not there."""
        try:
            return (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError:
            return None

    async def stream(self, path: Path, start: int, length: int, chunk: int) -> AsyncIterator[memoryview]:
        """`length` bytes from `start`, read in a thread `chunk` bytes at a time into ONE buffer:
        each view is overwritten by the next, so the caller must be done with it (written to the
        socket) before asking for the next. A new `bytes` per chunk, made in whichever I/O thread
        read it, left freed chunks in each thread's malloc arena (RSS grew by tens of MiB)."""
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            buffer = memoryview(bytearray(min(chunk, length)))
            position, remaining = start, length
            while remaining > 0:
                count = await asyncio.to_thread(os.preadv, fd, [buffer[: min(len(buffer), remaining)]], position)
                if not count:
                    return
                position += count
                remaining -= count
                yield buffer[:count]
        finally:
            os.close(fd)

    # -- maintenance ---------------------------------------------------------------------
    def stale_temps(self, older_than: float) -> Iterator[Path]:
        cutoff = time.time() - older_than
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    yield Path(entry.path)

    def clean_temps(self, older_than: float) -> list[Path]:
        removed = []
        for path in list(self.stale_temps(older_than)):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def stored_hashes(self) -> Iterator[str]:
        for path in self.blobs.glob("??/??/*"):
            if path.is_file():
                yield path.name

    def thumb_hashes(self) -> Iterator[str]:
        for path in self.thumbs.glob("??/??/*"):
            if path.is_dir():
                yield path.name
