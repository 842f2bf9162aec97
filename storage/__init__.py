"""The content store: bytes kept under their sha256, behind one face that every backend has.

Nothing outside `storage/` knows where bytes live. The rest of the service speaks of content by
its sha256 and of derived images (thumbnails, avatar sizes) by (sha256, name):

- an upload in flight goes into a `Sink` (`open_sink`), written from a worker thread while it is
  hashed; `commit(sink, sha256)` then keeps it as that content (idempotent: content already
  stored is not stored twice, and the sink is consumed either way);
- a finished local file (the imaging pool's output, such as an avatar) becomes a sink by `adopt`;
- imaging reads content from a local file (`local_copy`) and writes derived images into a local
  staging directory (`staging_dir`), which `put_derived` takes into the store;
- downloads ask for a size, a byte range as a stream (`read`), and whether a front proxy may
  deliver the bytes itself (`accel_path`, X-Accel-Redirect);
- `remove` drops content with its derived images; the maintenance calls serve fsck.

`storage.local.LocalStore` keeps content on a filesystem volume; `storage.gridfs.GridFSStore` (when
configured) in MongoDB's GridFS. `tests/test_store.py` is the contract both pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol


class WriteFailed(Exception):
    """The store refused the bytes (volume full, read-only, I/O error, database down)."""


class Sink(Protocol):
    """Where one upload's bytes go before their digest is known. Every method blocks: the caller
    runs them in a worker thread, one at a time, in order."""

    path: Path | None  # the local file that holds the bytes, when there is one

    def write(self, chunks: Sequence[bytes | memoryview]) -> int:
        """Append the chunks; returns the bytes written. A chunk may be a view of the caller's
        buffer (the ingest's aligned batches): it is written or copied before this returns."""
        ...

    def finish(self) -> None:
        """Make what was written durable (before it may be committed)."""
        ...

    def discard(self) -> None:
        """Give the bytes up; safe to call more than once and after finish."""
        ...


class ContentStore(Protocol):
    def prepare(self) -> None:
        """Create what the store needs (directories, indexes); called once at start-up."""
        ...

    def check(self) -> bool:
        """The store can be written to now (for /healthz). Blocking."""
        ...

    def open_sink(self) -> Sink:
        """A new place for one upload's bytes. Blocking."""
        ...

    async def adopt(self, path: Path) -> Sink:
        """A finished local staging file as a sink (it is consumed by commit or discard)."""
        ...

    def sink_file(self, sink: Sink) -> AbstractAsyncContextManager[Path]:
        """A local file with a finished sink's bytes (for decoding them before anything is kept,
        as an avatar's upload is), valid inside the `async with`; the sink is not consumed."""
        ...

    async def commit(self, sink: Sink, sha256: str) -> None:
        """Keep a finished sink's bytes as the content `sha256` unless it is already stored;
        the sink is consumed either way. Durable when it returns."""
        ...

    def staging_file(self) -> Path:
        """A new, empty local file for work in progress (removed by whoever asked for it)."""
        ...

    def staging_dir(self) -> Path:
        """A new, empty local directory for work in progress (removed by whoever asked)."""
        ...

    def local_copy(self, sha256: str) -> AbstractAsyncContextManager[Path]:
        """A local file with the content, for decoding, valid inside the `async with`."""
        ...

    async def put_derived(self, sha256: str, name: str, path: Path) -> None:
        """Keep a local file as the derived image `name` of `sha256` (the file is consumed)."""
        ...

    async def size(self, sha256: str, derived: str | None = None) -> int | None:
        """The stored size of the content (or of one of its derived images); None if absent."""
        ...

    def read(self, sha256: str, start: int, length: int, derived: str | None = None) -> AsyncIterator[memoryview]:
        """`length` bytes from `start`, in bounded steps. Each view may be overwritten by the
        next: the caller is done with one (written it out) before it asks for the next."""
        ...

    def accel_path(self, sha256: str, derived: str | None = None) -> str | None:
        """The path below the storage root a front proxy serves for X-Accel-Redirect, or None
        when this store's bytes are not on a filesystem the proxy can read."""
        ...

    async def remove(self, sha256: str) -> None:
        """Drop the content and its derived images (absent ones are no error)."""
        ...

    # -- maintenance (fsck and start-up) ---------------------------------------------------
    async def clean_staging(self, older_than: float) -> int:
        """Remove staging files and sinks older than `older_than` seconds; returns how many."""
        ...

    async def contents(self) -> set[str]:
        """Every sha256 stored."""
        ...

    async def derived_contents(self) -> set[str]:
        """Every sha256 that has derived images stored."""
        ...
