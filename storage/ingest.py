"""Receive one upload's bytes: hashed as they arrive, written once into the store's sink.

The event loop only appends chunks to a list; every MiB the list, joined, is handed to worker
threads: one updates md5 and writes the batch into the sink, the other updates sha256 and sha1
(hashlib and the writes release the GIL, so the digests run on both cores), while the loop goes on
reading the next MiB. The last batch, its digests and the sink's `finish` (durability) are one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass

from storage import ContentStore, Sink, WriteFailed

FLUSH_BYTES = 1 << 20
HEAD_BYTES = 1 << 16

__all__ = ["Digests", "Incoming", "Overflow", "WriteFailed"]


class Overflow(Exception):
    """More bytes arrived than the upload may have."""


@dataclass(frozen=True)
class Digests:
    md5: str
    sha1: str
    sha256: str


class Incoming:
    def __init__(self, store: ContentStore, limit: int) -> None:
        self.store = store
        self.sink: Sink | None = None
        self.limit = limit
        self.size = 0
        self.head = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._job: asyncio.Future | None = None
        self._closed = False
        self._discarding: asyncio.Future | None = None

    def feed(self, chunk: bytes) -> None:
        """Called synchronously by the body parser with each piece of the file."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise Overflow
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self._buffer.append(chunk)
        self._buffered += len(chunk)

    async def pump(self) -> None:
        """Hand the buffer to the writer threads once it is large; waits only for the previous
        batch, so receiving and hashing overlap (and the socket is throttled by the store)."""
        if self._buffered >= FLUSH_BYTES:
            if self._job is not None:
                await self._wait()
            data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
            self._job = asyncio.ensure_future(self._batch(data, last=False))

    async def _wait(self) -> None:
        job, self._job = self._job, None
        await job  # type: ignore[misc]

    async def _batch(self, data: bytes, last: bool) -> None:
        await asyncio.gather(asyncio.to_thread(self._write, data, last), asyncio.to_thread(self._digest, data))

    def _write(self, data: bytes, last: bool) -> None:
        """In a thread: md5 and the write (the sink is made by the first batch); with `last`,
        make it durable."""
        if self.sink is None:
            self.sink = self.store.open_sink()
        self._md5.update(data)
        if data:
            self.sink.write([data])
        if last:
            self.sink.finish()

    def _digest(self, data: bytes) -> None:
        self._sha256.update(data)
        self._sha1.update(data)

    async def finish(self) -> Digests:
        """Write what is left and make it durable. Returns the digests."""
        if self._job is not None:
            await self._wait()
        data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        await self._batch(data, last=True)
        self._closed = True
        return Digests(self._md5.hexdigest(), self._sha1.hexdigest(), self._sha256.hexdigest())

    async def discard(self) -> None:
        """Give the upload up: wait for the writers, then drop what was written."""
        if self._job is not None:
            with contextlib.suppress(Exception):
                await self._job
            self._job = None
        self._closed = True
        if self.sink is not None:
            sink, self.sink = self.sink, None
            await asyncio.to_thread(sink.discard)

    def abandon(self) -> None:
        """discard() from synchronous code (a closed connection); keeps the task referenced."""
        if self._discarding is None:
            self._discarding = asyncio.ensure_future(self.discard())
