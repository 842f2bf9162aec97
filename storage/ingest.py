"""Receive one upload's bytes: hashed as they arrive, written once into the store's sink.

The event loop copies each piece into one of the upload's two fixed, page-aligned buffers of
BATCH_BYTES (no other allocation per piece, and memory does not grow with the file); each full
buffer is handed to three worker threads: one writes it into the sink (with direct I/O from the
buffer itself on a local volume, see storage/local.py: mostly a wait for the disk), one updates
md5, one sha256 and sha1 (hashlib and the writes release the GIL, so the digests run on both
cores), while the loop fills the other buffer. The last, partial batch, its digests and the
sink's `finish` (durability) are one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
from dataclasses import dataclass

from storage import ContentStore, Sink, WriteFailed

BATCH_BYTES = 1 << 20  # a multiple of the page size: each full batch can be written with direct I/O
HEAD_BYTES = 1 << 16

__all__ = ["Digests", "Incoming", "Overflow", "WriteFailed"]


class Overflow(Exception):
    """More bytes arrived than the upload may have."""


@dataclass(frozen=True)
class Digests:
    md5: str
    sha1: str
    sha256: str


def _buffer() -> memoryview:
    """A page-aligned buffer of BATCH_BYTES (anonymous mmap: its pages go back to the system
    when the last view of it does)."""
    return memoryview(mmap.mmap(-1, BATCH_BYTES))


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
        # the buffer being filled, and the other (in the workers' hands while `_job` runs); made
        # at the first byte and when the first is full (a small upload has one), freed when the
        # upload ends
        self._buffers: list[memoryview] = []
        self._filled = 0
        self._waiting: list[memoryview] = []  # pieces fed while the buffer was full: pump() copies them
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
        if self._closed:
            return
        if not self._buffers:
            self._buffers = [_buffer()]
        if self._waiting:
            self._waiting.append(memoryview(chunk))
        else:
            self._copy(memoryview(chunk))

    def _copy(self, data: memoryview) -> None:
        """Copy what fits into the buffer being filled; keep the rest (a view) for pump()."""
        take = min(len(data), BATCH_BYTES - self._filled)
        self._buffers[0][self._filled : self._filled + take] = data[:take]
        self._filled += take
        if take < len(data):
            self._waiting.append(data[take:])

    async def pump(self) -> None:
        """Hand each full buffer to the writer threads; waits only for the previous batch (whose
        buffer is the one to fill next), so receiving and hashing overlap (and the socket is
        throttled by the store)."""
        while self._filled == BATCH_BYTES and not self._closed:
            await self._hand_over(last=False)
            if self._closed:  # given up while the previous batch ran
                return
            waiting, self._waiting = self._waiting, []
            for data in waiting:
                if self._waiting:
                    self._waiting.append(data)
                else:
                    self._copy(data)

    async def _hand_over(self, last: bool) -> None:
        if self._job is not None:
            await self._wait()
        if self._closed:
            if last:
                raise WriteFailed("the upload was given up")
            return
        full = self._buffers[0][: self._filled] if self._buffers else memoryview(b"")
        if len(self._buffers) == 1 and not last:
            self._buffers.append(_buffer())  # the second, once the first is full
        self._buffers.reverse()
        self._filled = 0
        if last:
            await self._batch(full, last=True)
        else:
            self._job = asyncio.ensure_future(self._batch(full, last=False))

    async def _wait(self) -> None:
        try:
            await self._job  # type: ignore[misc]
        finally:
            self._job = None

    async def _batch(self, data: memoryview, last: bool) -> None:
        await asyncio.gather(
            asyncio.to_thread(self._write, data, last),
            asyncio.to_thread(self._md5.update, data),
            asyncio.to_thread(self._digest, data),
        )

    def _write(self, data: memoryview, last: bool) -> None:
        """In a thread: the write (the sink is made by the first batch); with `last`, make it
        durable. A direct write waits for the disk: in a thread of its own, that wait is not
        added to md5's time."""
        if self.sink is None:
            self.sink = self.store.open_sink()
        if data:
            self.sink.write([data])
        if last:
            self.sink.finish()

    def _digest(self, data: memoryview) -> None:
        self._sha256.update(data)
        self._sha1.update(data)

    async def finish(self) -> Digests:
        """Write what is left and make it durable. Returns the digests."""
        await self.pump()
        await self._hand_over(last=True)
        self._release()
        return Digests(self._md5.hexdigest(), self._sha1.hexdigest(), self._sha256.hexdigest())

    def _release(self) -> None:
        """The upload is over: its buffers go (once the last view of them does)."""
        self._closed = True
        self._buffers, self._waiting, self._filled = [], [], 0

    async def discard(self) -> None:
        """Give the upload up: wait for the writers, then drop what was written. Closed first,
        so that a pump() waiting for the same batch hands no other over."""
        self._closed = True
        if self._job is not None:
            with contextlib.suppress(Exception):
                await self._job
            self._job = None
        self._release()
        if self.sink is not None:
            sink, self.sink = self.sink, None
            await asyncio.to_thread(sink.discard)

    def abandon(self) -> None:
        """discard() from synchronous code (a closed connection); keeps the task referenced."""
        if self._discarding is None:
            self._discarding = asyncio.ensure_future(self.discard())
