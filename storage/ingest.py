"""Receive one upload's bytes: hashed as they arrive, written once to a temp file.

The event loop only appends chunks to a buffer; every MiB the buffer is handed to a thread that
updates md5 and sha256 and writes it (hashlib releases the GIL), while the loop goes on reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

from storage.local import BlobStore

FLUSH_BYTES = 1 << 20
HEAD_BYTES = 1 << 16


class TooLarge(Exception):
    """More bytes arrived than the upload may have."""


class Incoming:
    def __init__(self, store: BlobStore, limit: int) -> None:
        self.fd, self.path = store.new_temp()
        self.limit = limit
        self.size = 0
        self.head = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._job: asyncio.Future | None = None
        self._closed = False
        self._discarding: asyncio.Future | None = None

    def feed(self, chunk: bytes) -> None:
        """Called synchronously by the multipart parser with each piece of the file part."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self._buffer.append(chunk)
        self._buffered += len(chunk)

    async def pump(self) -> None:
        """Hand the buffer to the writer thread once it is large; waits only for the previous
        batch, so receiving and hashing overlap (and the socket is throttled by the disk)."""
        if self._buffered >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._job is not None:
            await self._job
            self._job = None
        if self._buffered:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self._job = asyncio.ensure_future(asyncio.to_thread(self._write, data))

    def _write(self, data: bytes) -> None:
        self._md5.update(data)
        self._sha256.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    async def finish(self) -> tuple[str, str]:
        """Write what is left, fsync, close. Returns (md5, sha256) hex digests."""
        await self._flush()
        if self._job is not None:
            await self._job
            self._job = None
        await asyncio.to_thread(os.fsync, self.fd)
        self._close()
        return self._md5.hexdigest(), self._sha256.hexdigest()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    async def discard(self) -> None:
        """Give the upload up: wait for the writer, close and remove the temp file."""
        if self._job is not None:
            with contextlib.suppress(OSError):
                await self._job
            self._job = None
        self._close()
        Path(self.path).unlink(missing_ok=True)

    def abandon(self) -> None:
        """discard() from synchronous code (a closed connection); keeps the task referenced."""
        if self._discarding is None:
            self._discarding = asyncio.ensure_future(self.discard())
