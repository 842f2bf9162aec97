"""Receive one upload's bytes: hashed as they arrive, written once to a temp file.

The event loop only appends chunks to a list; every MiB the list, joined, is handed to a thread
that updates md5 and sha256 and writes it (hashlib and the write release the GIL), while the loop
goes on reading the next MiB. Every 8 MiB the kernel is asked to start writing the temp file back
(sync_file_range, Linux), so the fsync at the end only waits for the tail. The temp file is
created by the first write, in the thread; the last batch, its digests and the fsync are one
thread hop (a small upload makes only that one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from storage.local import BlobStore

FLUSH_BYTES = 1 << 20
HEAD_BYTES = 1 << 16
WRITEBACK_BYTES = 8 << 20  # start the kernel's writeback every this many bytes
MAX_IOVECS = 512  # below IOV_MAX (1024); a longer list of chunks is joined first
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), called without the GIL; None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_start_writeback = _sync_file_range()


def _update(digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


def _write_all(fd: int, chunks: list[bytes]) -> int:
    """Write the chunks in order with one writev (rarely more); returns the bytes written."""
    if len(chunks) > MAX_IOVECS:
        chunks = [b"".join(chunks)]
    total = sum(len(chunk) for chunk in chunks)
    written = os.writev(fd, chunks) if chunks else 0
    if written < total:  # a short write (signal, nearly full volume): finish with plain writes
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    return total


class TooLarge(Exception):
    """More bytes arrived than the upload may have."""


class WriteFailed(Exception):
    """The storage volume refused the bytes (full, read-only, I/O error)."""


class Incoming:
    def __init__(self, store: BlobStore, limit: int) -> None:
        # The temp file is created by the first write, in a thread: creating a file can wait on
        # the filesystem's journal (behind other uploads' fsyncs), which the loop must not do.
        self.store = store
        self.fd: int | None = None
        self.path: Path | None = None
        self.limit = limit
        self.size = 0
        self.head = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._written = 0
        self._writeback_from = 0
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
            await self._wait()
        if self._buffered:
            # one buffer: the thread takes the GIL back once per digest and batch, not per chunk
            chunks, self._buffer, self._buffered = [b"".join(self._buffer)], [], 0
            self._job = asyncio.ensure_future(asyncio.to_thread(self._write, chunks))

    async def _wait(self) -> None:
        job, self._job = self._job, None
        try:
            await job  # type: ignore[misc]
        except OSError as exc:
            raise WriteFailed(exc.strerror) from exc

    def _write(self, chunks: list[bytes]) -> None:
        """In a thread: hash and write a batch; start the writeback of what has piled up."""
        if self.fd is None:
            self.fd, self.path = self.store.new_temp()
        _update(self._md5, chunks)
        _update(self._sha256, chunks)
        self._written += _write_all(self.fd, chunks)
        pending = self._written - self._writeback_from
        if _start_writeback is not None and pending >= WRITEBACK_BYTES:
            _start_writeback(self.fd, self._writeback_from, pending, _SYNC_FILE_RANGE_WRITE)  # a hint: errors ignored
            self._writeback_from = self._written

    def _write_last(self, chunks: list[bytes]) -> None:
        """In a thread: the last batch, then fsync (one hop for a small upload)."""
        self._write(chunks)
        os.fsync(self.fd)

    async def finish(self) -> tuple[str, str]:
        """Write what is left, fsync, close. Returns (md5, sha256) hex digests."""
        if self._job is not None:
            await self._wait()
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        try:
            await asyncio.to_thread(self._write_last, chunks)
        except OSError as exc:
            raise WriteFailed(exc.strerror) from exc
        self._close()
        return self._md5.hexdigest(), self._sha256.hexdigest()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.fd is not None:
                os.close(self.fd)

    async def discard(self) -> None:
        """Give the upload up: wait for the writer, close and remove the temp file."""
        if self._job is not None:
            with contextlib.suppress(OSError):
                await self._job
            self._job = None
        self._close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """discard() from synchronous code (a closed connection); keeps the task referenced."""
        if self._discarding is None:
            self._discarding = asyncio.ensure_future(self.discard())
