"""The GridFS store's own behaviour against the real database server: chunks, staging, dedup.
(The contract every store keeps is tests/test_store.py, run over both backends.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from storage.gridfs import GridFSStore

CHUNK = 1024


@pytest.fixture
def store(settings, tmp_path: Path):
    s = GridFSStore(settings.mongodb.uri, settings.mongodb.database, tmp_path / "scratch", CHUNK)
    s.prepare()
    yield s
    s.close()


async def put(store: GridFSStore, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    sink = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(sink.write, [data[i : i + 700] for i in range(0, len(data), 700)])
    await asyncio.to_thread(sink.finish)
    await store.commit(sink, sha256)
    return sha256


async def read_all(store: GridFSStore, sha256: str, start: int, length: int, derived: str | None = None) -> bytes:
    return b"".join([bytes(block) async for block in store.read(sha256, start, length, derived)])


async def test_ranges_read_only_from_the_chunk_they_start_in(store):
    data = os.urandom(10 * CHUNK + 123)
    sha256 = await put(store, data)
    assert await store.size(sha256) == len(data)
    for start, length in ((0, len(data)), (CHUNK - 1, 2), (5 * CHUNK, CHUNK), (10 * CHUNK + 100, 500), (3, 0)):
        assert await read_all(store, sha256, start, length) == data[start : start + length]
    blocks = [len(b) async for b in store.read(sha256, 2 * CHUNK + 10, 3 * CHUNK)]
    assert blocks == [CHUNK - 10, CHUNK, CHUNK, 10]  # chunk-aligned steps, nothing before the start
    assert store.accel_path(sha256) is None


async def test_a_dedup_hit_stores_nothing_twice(store):
    data = os.urandom(3 * CHUNK)
    sha256 = await put(store, data)
    await put(store, data)
    assert store.meta.files.count_documents({}) == 1
    assert store.meta.chunks.count_documents({}) == 3
    assert store.meta.staging.count_documents({}) == 0
    assert await store.contents() == {sha256}


async def test_cut_off_uploads_are_cleaned_when_stale_only(store):
    sink = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(sink.write, [os.urandom(5 * CHUNK)])  # chunks written, no files document
    finished = await asyncio.to_thread(store.open_sink)
    await asyncio.to_thread(finished.write, [b"x" * 10])
    await asyncio.to_thread(finished.finish)  # finished, never committed (a crash before commit)
    scratch = store.staging_file()
    assert store.meta.chunks.count_documents({}) >= 5
    assert await store.clean_staging(3600) == 0  # in flight: kept
    assert store.meta.chunks.count_documents({}) >= 5 and scratch.exists()
    assert await store.clean_staging(0) == 3
    assert store.meta.chunks.count_documents({}) == 0
    assert store.meta.files.count_documents({}) == 0
    assert store.meta.staging.count_documents({}) == 0
    assert not scratch.exists()


async def test_derived_images_live_and_leave_with_their_content(store, tmp_path):
    data = os.urandom(2 * CHUNK + 1)
    sha256 = await put(store, data)
    thumb = tmp_path / "t.webp"
    thumb.write_bytes(b"RIFF-thumb" * 300)
    await store.put_derived(sha256, "thumb.webp", thumb)
    assert not thumb.exists()
    again = tmp_path / "t2.webp"
    again.write_bytes(b"RIFF-remade" * 10)
    await store.put_derived(sha256, "thumb.webp", again)  # a remake replaces it
    assert await store.size(sha256, "thumb.webp") == 110
    assert await read_all(store, sha256, 0, 110, "thumb.webp") == b"RIFF-remade" * 10
    assert await store.derived_contents() == {sha256}
    async with store.local_copy(sha256) as path:
        assert path.read_bytes() == data
    assert not path.exists()
    await store.remove(sha256)
    assert await store.size(sha256) is None and await store.size(sha256, "thumb.webp") is None
    assert await store.contents() == set() and await store.derived_contents() == set()
    assert store.meta.chunks.count_documents({}) == 0
    await store.remove(sha256)  # absent: no error
