"""The content store alone, through its face (`storage.ContentStore`): the contract every backend
passes. The `store` fixture yields each backend in turn (the local volume, and GridFS in the real
database server the suite uses); a test that is about one backend's layout says so and checks it
only for that backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import mmap
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import ContentStore, Sink
from storage.gridfs import GridFSStore
from storage.local import READ_CHUNK, LocalStore
from tests.helpers import opaque, sha256

BACKENDS = ["local", "gridfs"]
# GridFS chunks that do not divide the local store's read step: ranges cross both kinds of boundary
GRIDFS_CHUNK = 100_000


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContentStore]:
    if request.param == "local":
        backend: ContentStore = LocalStore(tmp_path / "store")
    elif request.param == "gridfs":
        s = request.getfixturevalue("settings")  # its own database, dropped after the test
        backend = GridFSStore(s.mongodb.uri, s.mongodb.database, tmp_path / "scratch", GRIDFS_CHUNK)
    else:  # pragma: no cover - a backend named in BACKENDS without a branch here
        raise AssertionError(f"unknown backend {request.param}")
    await asyncio.to_thread(backend.prepare)
    yield backend
    if isinstance(backend, GridFSStore):
        backend.close()


def backdate_sink(store: ContentStore, sink: Sink, when: float) -> None:
    """About each backend's staging: a sink's age is its file's mtime (local) or its staging
    record's `created` (GridFS, whose sinks' bytes are in the database)."""
    if sink.path is not None:
        os.utime(sink.path, (when, when))
    else:
        assert isinstance(store, GridFSStore)
        created = dt.datetime.fromtimestamp(when, dt.UTC)
        store.meta.staging.update_one({"_id": sink.file_id}, {"$set": {"created": created}})  # type: ignore[attr-defined]


async def sink_of(store: ContentStore, *pieces: bytes) -> Sink:
    """A finished sink holding `pieces`, written as an upload writes it (in a worker thread)."""
    sink = await asyncio.to_thread(store.open_sink)
    for piece in pieces:
        assert await asyncio.to_thread(sink.write, [piece]) == len(piece)
    await asyncio.to_thread(sink.finish)
    return sink


async def keep(store: ContentStore, data: bytes) -> str:
    """Store `data` as content; returns its sha256."""
    digest = sha256(data)
    await store.commit(await sink_of(store, data), digest)
    return digest


async def read_all(store: ContentStore, digest: str, start: int, length: int, derived: str | None = None) -> bytes:
    out = bytearray()
    async for view in store.read(digest, start, length, derived):
        assert len(view) <= max(length, 1)
        out += view  # copied at once: the next step may overwrite the view
    return bytes(out)


async def derived_file(store: ContentStore, data: bytes) -> Path:
    """A staging file with `data`, as the imaging leaves a derived image."""
    path = await asyncio.to_thread(store.staging_file)
    path.write_bytes(data)
    return path


async def test_a_sink_written_finished_and_committed_is_content(store):
    data = opaque(300_000)
    sink = await asyncio.to_thread(store.open_sink)
    assert await asyncio.to_thread(sink.write, [data[:1000], data[1000:5000]]) == 5000
    assert await asyncio.to_thread(sink.write, [data[5000:]]) == len(data) - 5000
    await asyncio.to_thread(sink.finish)
    digest = sha256(data)
    assert await store.size(digest) is None  # nothing is content before the commit
    await store.commit(sink, digest)
    assert await store.size(digest) == len(data)
    assert await read_all(store, digest, 0, len(data)) == data
    assert await store.contents() == {digest}
    assert await store.clean_staging(0) == 0  # the sink's bytes moved into the store


async def test_a_sink_takes_views_of_a_buffer_the_caller_reuses(store):
    """The ingest hands each batch as a view of one of two page-aligned buffers, refilled once
    write() returns (on a local volume, the whole-block views go with direct I/O, the short
    tail buffered)."""
    block = 1 << 16
    data = opaque(3 * block + 1000)
    buffer = memoryview(mmap.mmap(-1, block))
    sink = await asyncio.to_thread(store.open_sink)
    for start in range(0, len(data), block):
        piece = data[start : start + block]
        buffer[: len(piece)] = piece
        assert await asyncio.to_thread(sink.write, [buffer[: len(piece)]]) == len(piece)
        buffer[: len(piece)] = bytes(len(piece))  # the caller reuses its buffer at once
    await asyncio.to_thread(sink.finish)
    digest = sha256(data)
    await store.commit(sink, digest)
    assert await read_all(store, digest, 0, len(data)) == data
    buffer.release()


async def test_commit_is_idempotent_and_consumes_the_second_sink(store):
    data = opaque(50_000)
    digest = await keep(store, data)
    second = await sink_of(store, data)
    await store.commit(second, digest)
    assert await store.contents() == {digest}
    assert await store.size(digest) == len(data)
    assert await read_all(store, digest, 0, len(data)) == data
    assert second.path is None or not second.path.exists()
    assert await store.clean_staging(0) == 0  # no sink left behind


async def test_an_empty_sink_commits_empty_content(store):
    digest = sha256(b"")
    await store.commit(await sink_of(store), digest)
    assert await store.size(digest) == 0
    assert await read_all(store, digest, 0, 0) == b""


async def test_adopt_takes_a_finished_staging_file(store):
    data = opaque(20_000)
    path = await asyncio.to_thread(store.staging_file)
    path.write_bytes(data)
    await store.commit(await store.adopt(path), sha256(data))
    assert await read_all(store, sha256(data), 0, len(data)) == data
    assert not path.exists()
    assert await store.clean_staging(0) == 0


async def test_discard_gives_the_bytes_up(store):
    sink = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(sink.write, [b"half an upload"])
    await asyncio.to_thread(sink.discard)
    await asyncio.to_thread(sink.discard)  # safe twice
    finished = await sink_of(store, b"finished, then refused")
    await asyncio.to_thread(finished.discard)  # safe after finish
    untouched = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(untouched.discard)  # and before any write
    assert await store.contents() == set()
    assert await store.clean_staging(0) == 0


async def test_sink_file_shows_a_finished_sink_without_consuming_it(store):
    data = opaque(10_000)
    sink = await sink_of(store, data)
    async with store.sink_file(sink) as path:
        assert path.read_bytes() == data
    await store.commit(sink, sha256(data))  # still there to commit
    assert await store.size(sha256(data)) == len(data)


async def test_local_copy_has_the_content(store):
    data = opaque(70_000)
    digest = await keep(store, data)
    async with store.local_copy(digest) as path:
        assert path.read_bytes() == data


async def test_derived_images_put_size_read(store):
    digest = await keep(store, opaque(1000))
    thumb = opaque(777)
    staged = await derived_file(store, thumb)
    await store.put_derived(digest, "thumb.webp", staged)
    assert not staged.exists()  # the staging file was consumed
    assert await store.size(digest, "thumb.webp") == len(thumb)
    assert await read_all(store, digest, 0, len(thumb), "thumb.webp") == thumb
    assert await read_all(store, digest, 100, 50, "thumb.webp") == thumb[100:150]
    assert await store.size(digest, "other.webp") is None
    assert await store.size(digest) == 1000  # the content itself is untouched
    assert await store.derived_contents() == {digest}


async def test_ranged_reads_at_chunk_boundaries(store):
    data = opaque(2 * READ_CHUNK + 17)
    digest = await keep(store, data)
    size = len(data)
    for start, length in [
        (0, size),
        (0, READ_CHUNK),
        (0, READ_CHUNK + 1),
        (READ_CHUNK - 1, 2),
        (READ_CHUNK, READ_CHUNK),
        (READ_CHUNK + 1, READ_CHUNK),
        (2 * READ_CHUNK, 17),
        (size - 1, 1),
        (5, size - 5),
        (123, 0),
    ]:
        got = await read_all(store, digest, start, length)
        assert got == data[start : start + length], (start, length)


async def test_size_of_missing_content_is_none(store):
    assert await store.size("0" * 64) is None
    assert await store.size("0" * 64, "thumb.webp") is None
    digest = await keep(store, b"present")
    assert await store.size(digest, "thumb.webp") is None


async def test_remove_drops_content_and_its_derived_images(store):
    data = opaque(4000)
    digest = await keep(store, data)
    other = await keep(store, opaque(4000))
    for name in ("thumb.webp", "64_a.webp"):
        await store.put_derived(digest, name, await derived_file(store, opaque(100)))
    await store.remove(digest)
    assert await store.size(digest) is None
    assert await store.size(digest, "thumb.webp") is None and await store.size(digest, "64_a.webp") is None
    assert await store.contents() == {other}
    assert await store.derived_contents() == set()
    await store.remove(digest)  # absent: no error
    await store.remove("f" * 64)


async def test_contents_and_derived_contents(store):
    assert await store.contents() == set() and await store.derived_contents() == set()
    a, b = await keep(store, opaque(10)), await keep(store, opaque(11))
    await store.put_derived(a, "thumb.png", await derived_file(store, b"png"))
    await store.put_derived("e" * 64, "thumb.png", await derived_file(store, b"of no content"))
    assert await store.contents() == {a, b}
    assert await store.derived_contents() == {a, "e" * 64}


async def test_accel_path(store):
    data = opaque(3000)
    digest = await keep(store, data)
    await store.put_derived(digest, "thumb.webp", await derived_file(store, b"thumb"))
    for derived, expected in ((None, data), ("thumb.webp", b"thumb")):
        path = store.accel_path(digest, derived)
        if path is None:
            continue  # this backend's bytes are not on a filesystem a proxy can read
        assert not path.startswith("/") and ".." not in path.split("/"), path
        if isinstance(store, LocalStore):  # about the local layout: the path is below the root
            assert (store.root / path).read_bytes() == expected


async def test_clean_staging_by_age(store):
    old, fresh = time.time() - 7200, time.time()
    stale_file = await asyncio.to_thread(store.staging_file)
    stale_dir = await asyncio.to_thread(store.staging_dir)
    (stale_dir / "left.png").write_bytes(b"imaging output")
    stale_sink = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(stale_sink.write, [b"a crashed upload"])
    fresh_file = await asyncio.to_thread(store.staging_file)
    live = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(live.write, [b"an upload in flight"])
    for path in (stale_file, stale_dir):
        os.utime(path, (old, old))
    await asyncio.to_thread(backdate_sink, store, stale_sink, old)
    os.utime(fresh_file, (fresh, fresh))

    assert await store.clean_staging(3600) == 3
    assert not stale_file.exists() and not stale_dir.exists()
    assert fresh_file.exists()
    await asyncio.to_thread(live.finish)  # the live sink is untouched: it still commits
    await store.commit(live, sha256(b"an upload in flight"))
    assert await read_all(store, sha256(b"an upload in flight"), 0, 19) == b"an upload in flight"
    assert await store.clean_staging(0) == 1  # the fresh file, once anything goes
    assert await store.clean_staging(0) == 0


async def test_check_and_prepare(store):
    assert await asyncio.to_thread(store.check) is True
    await asyncio.to_thread(store.prepare)  # again: nothing lost
    digest = await keep(store, b"kept")
    await asyncio.to_thread(store.prepare)
    assert await store.size(digest) == 4
    assert await store.clean_staging(0) == 0  # check() leaves no probe behind
