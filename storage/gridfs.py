"""The GridFS content store: content and derived images in the configured MongoDB.

Every server process on every machine sees the same bytes, so several machines can serve one
deployment. Bytes move through a synchronous PyMongo client and `gridfs.GridFSBucket`, always in
worker threads (the service's loop is never blocked):

- an upload's sink writes GridFS chunks as the bytes arrive (memory: under one chunk), then the
  files document, named "staging-<id>"; committing renames it to the sha256, or deletes it when that
  content is already stored (a dedup hit stores nothing twice);
- downloads seek to the chunk holding the first byte of the range and read on from there;
- derived images are GridFS files "<sha256>/<name>", removed with their content;
- the only local files are imaging's scratch copies under `storage.path/tmp` (staging_file,
  staging_dir, local_copy).

The documents and their queries are models/gridstore.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import gridfs
from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from models.gridstore import CONTENT, DERIVED, STAGING, GridMeta
from storage import WriteFailed

BUCKET = "store"
COPY_STEP = 1 << 20  # bytes per read when copying between a local file and GridFS


class GridFSSink:
    """One upload in flight, written as GridFS chunks as it arrives (blocking; used from one
    worker thread). The driver's upload stream keeps up to 32 MiB of chunks in memory before it
    writes them; this sink holds less than one chunk."""

    def __init__(self, store: GridFSStore) -> None:
        self.store = store
        self.file_id = ObjectId()
        self.path: Path | None = None  # the bytes are in the database, not in a local file
        self.chunk_size = store.chunk_size
        self.buffer = bytearray()
        self.n = 0  # chunks written
        self.length = 0
        store.meta.staging_opened(self.file_id, dt.datetime.now(dt.UTC))
        self.finished = False
        self.done = False  # committed or discarded

    def write(self, chunks: Sequence[bytes | memoryview]) -> int:
        total = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                total += len(view)
                while view:
                    take = self.chunk_size - len(self.buffer)
                    if not self.buffer and len(view) >= self.chunk_size:
                        self._put(view[: self.chunk_size])  # a whole chunk: no copy into the buffer
                    else:
                        self.buffer += view[:take]
                        if len(self.buffer) == self.chunk_size:
                            self._put(self.buffer)
                            self.buffer = bytearray()
                    view = view[take:]
        except PyMongoError as exc:
            raise WriteFailed(str(exc)) from exc
        self.length += total
        return total

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        self.store.meta.insert_chunk(self.file_id, self.n, data)
        self.n += 1

    def finish(self) -> None:
        """The last chunk and the files document: acknowledged by the database when it returns."""
        try:
            if self.buffer:
                self._put(self.buffer)
                self.buffer = bytearray()
            self.store.meta.insert_file(
                self.file_id, f"staging-{self.file_id}", self.length, self.chunk_size, {"kind": STAGING}, dt.datetime.now(dt.UTC)
            )
        except PyMongoError as exc:
            raise WriteFailed(str(exc)) from exc
        self.finished = True

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        self.buffer = bytearray()
        with contextlib.suppress(PyMongoError):
            if self.finished:
                self.store.delete_ids([self.file_id])
            else:
                self.store.meta.delete_chunks(self.file_id)
            self.store.meta.staging_closed(self.file_id)


class GridFSStore:
    def __init__(self, uri: str, database: str, scratch: Path, chunk_size: int, timeout: float = 5.0) -> None:
        ms = int(timeout * 1000)
        self.client: MongoClient = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms)
        self.db = self.client[database]
        self.bucket = gridfs.GridFSBucket(self.db, BUCKET, chunk_size_bytes=chunk_size)
        self.meta = GridMeta(self.db, BUCKET)
        self.chunk_size = chunk_size
        self.root = scratch
        self.tmp = scratch / "tmp"

    def close(self) -> None:
        self.client.close()

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.meta.ensure_indexes()

    def check(self) -> bool:
        try:
            self.client.admin.command("ping")
            path = self.staging_file()
            path.unlink()
        except (PyMongoError, OSError):
            return False
        return True

    # -- uploads ------------------------------------------------------------------------
    def open_sink(self) -> GridFSSink:
        try:
            return GridFSSink(self)
        except PyMongoError as exc:
            raise WriteFailed(str(exc)) from exc

    async def adopt(self, path: Path) -> GridFSSink:
        return await asyncio.to_thread(self._adopt, path)

    def _adopt(self, path: Path) -> GridFSSink:
        sink = self.open_sink()
        try:
            with open(path, "rb") as f:
                while block := f.read(COPY_STEP):
                    sink.write([block])
            sink.finish()
        except BaseException:
            sink.discard()
            raise
        finally:
            path.unlink(missing_ok=True)
        return sink

    @contextlib.asynccontextmanager
    async def sink_file(self, sink: GridFSSink) -> AsyncIterator[Path]:  # type: ignore[override]
        """A local scratch copy of a finished sink (an avatar's upload, to decode it)."""
        path = await asyncio.to_thread(self.staging_file)
        try:
            await asyncio.to_thread(self._copy_out, sink.file_id, path)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def commit(self, sink: GridFSSink, sha256: str) -> None:  # type: ignore[override]
        await asyncio.to_thread(self._commit, sink, sha256)

    def _commit(self, sink: GridFSSink, sha256: str) -> None:
        if sink.done:
            return
        try:
            if self.meta.find(sha256, CONTENT) is not None:
                sink.discard()  # stored already: nothing twice
                return
            if not self.meta.make_content(sink.file_id, sha256):
                raise WriteFailed("the upload's staging file is gone")
            sink.done = True
            self.meta.staging_closed(sink.file_id)
        except PyMongoError as exc:
            raise WriteFailed(str(exc)) from exc

    # -- local scratch for imaging --------------------------------------------------------
    def staging_file(self) -> Path:
        path = self.tmp / secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        os.close(fd)
        return path

    def staging_dir(self) -> Path:
        path = self.tmp / secrets.token_hex(16)
        path.mkdir(mode=0o750)
        return path

    @contextlib.asynccontextmanager
    async def local_copy(self, sha256: str) -> AsyncIterator[Path]:
        path = await asyncio.to_thread(self.staging_file)
        try:
            await asyncio.to_thread(self._download, sha256, path)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _download(self, sha256: str, path: Path) -> None:
        doc = self.meta.find(sha256, CONTENT)
        if doc is None:
            raise FileNotFoundError(sha256)
        self._copy_out(doc["_id"], path)

    def _copy_out(self, file_id: Any, path: Path) -> None:
        """A GridFS file into a local file, one chunk in memory at a time."""
        with open(path, "wb") as out:
            n = 0
            while (data := self.meta.chunk(file_id, n)) is not None:
                out.write(data)
                n += 1

    async def put_derived(self, sha256: str, name: str, path: Path) -> None:
        await asyncio.to_thread(self._put_derived, sha256, name, path)

    def _put_derived(self, sha256: str, name: str, path: Path) -> None:
        filename = f"{sha256}/{name}"
        try:
            older = self.meta.ids_named(filename, DERIVED)
            with open(path, "rb") as f:
                self.bucket.upload_from_stream(filename, f, metadata={"kind": DERIVED, "sha256": sha256})
            self.delete_ids(older)  # one copy of each derived image (a remake replaces it)
        except PyMongoError as exc:
            raise WriteFailed(str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)

    # -- downloads ----------------------------------------------------------------------
    def _find(self, sha256: str, derived: str | None) -> dict | None:
        if derived is None:
            return self.meta.find(sha256, CONTENT)
        return self.meta.find(f"{sha256}/{derived}", DERIVED)

    async def size(self, sha256: str, derived: str | None = None) -> int | None:
        doc = await asyncio.to_thread(self._find, sha256, derived)
        return None if doc is None else int(doc["length"])

    async def read(self, sha256: str, start: int, length: int, derived: str | None = None) -> AsyncIterator[memoryview]:
        """The range chunk by chunk, from the chunk that holds `start` (those before it are never
        read): one point read on the chunks' (files_id, n) index each."""
        doc = await asyncio.to_thread(self._find, sha256, derived)
        if doc is None:
            return
        size, step = int(doc["length"]), int(doc["chunkSize"])
        end = min(size, start + length)
        position = start
        while position < end:
            n, offset = divmod(position, step)
            data = await asyncio.to_thread(self.meta.chunk, doc["_id"], n)
            if data is None:
                return  # removed meanwhile: the response ends short
            block = memoryview(data)[offset : offset + end - position]
            if not block:
                return
            position += len(block)
            yield block

    def accel_path(self, sha256: str, derived: str | None = None) -> str | None:
        return None  # not on a filesystem a proxy can read

    # -- removal and maintenance ------------------------------------------------------------
    async def remove(self, sha256: str) -> None:
        await asyncio.to_thread(lambda: self.delete_ids(self.meta.ids_of(sha256)))

    def delete_ids(self, ids: list[Any]) -> None:
        for file_id in ids:
            with contextlib.suppress(gridfs.errors.NoFile):
                self.bucket.delete(file_id)

    async def clean_staging(self, older_than: float) -> int:
        return await asyncio.to_thread(self._clean_staging, older_than)

    def _clean_staging(self, older_than: float) -> int:
        removed = 0
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
        for file_id in self.meta.stale_staging(cutoff):
            kind = self.meta.kind_of(file_id)
            if kind == STAGING:
                self.delete_ids([file_id])
            elif kind is None:
                self.meta.delete_chunks(file_id)  # cut off before its files document was written
            # kind "content": committed, only its record was left behind
            self.meta.staging_closed(file_id)
            removed += kind != CONTENT
        for path in list(self._stale_local(older_than)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    def _stale_local(self, older_than: float) -> Iterator[Path]:
        cutoff = time.time() - older_than
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    yield Path(entry.path)

    async def contents(self) -> set[str]:
        return await asyncio.to_thread(self.meta.contents)

    async def derived_contents(self) -> set[str]:
        return await asyncio.to_thread(self.meta.derived_contents)
