"""The content-reference protocol (services/refs.py) against the real database server and a real
store: no lock anywhere, deletions marked in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os

import pytest

from models.blobs import Blobs
from models.db import Database
from services import refs as refs_module
from services.refs import ContentRefs
from storage.local import LocalStore


@pytest.fixture
async def refs_parts(settings, tmp_path):
    db = Database(settings.mongodb.uri, settings.mongodb.database)
    await db.ensure_indexes()
    store = LocalStore(tmp_path / "files")
    store.prepare()
    yield Blobs(db.blobs), store
    await db.close()


async def commit(store: LocalStore, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    sink = store.open_sink()
    sink.write([data])
    sink.finish()
    await store.commit(sink, sha256)
    return sha256


async def test_the_last_release_removes_the_content(refs_parts):
    blobs, store = refs_parts
    refs = ContentRefs(blobs, store)
    data = os.urandom(1000)
    sha256 = hashlib.sha256(data).hexdigest()
    assert await refs.acquire(sha256, "m", 1000, "x/y") is None  # new
    await commit(store, data)
    assert (await refs.acquire(sha256, "m", 1000, "x/y"))["refs"] == 2
    assert not await refs.release(sha256)
    assert await store.size(sha256) == 1000
    assert await refs.release(sha256)
    assert await store.size(sha256) is None and await blobs.get(sha256) is None


async def test_an_acquire_waits_for_a_deletion_in_progress_then_stores_anew(refs_parts):
    blobs, store = refs_parts
    refs = ContentRefs(blobs, store)
    data = os.urandom(500)
    sha256 = hashlib.sha256(data).hexdigest()
    await refs.acquire(sha256, "m", 500, "x/y")
    await commit(store, data)
    await blobs.release(sha256)
    assert await blobs.mark_deleting(sha256, "other-process")  # a deleter, between its steps
    assert not await blobs.add_ref(sha256)
    waiting = asyncio.ensure_future(refs.acquire(sha256, "m", 500, "x/y"))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "an acquire must not take a reference to content being deleted"
    await store.remove(sha256)  # the deleter finishes
    assert await blobs.delete_marked(sha256, "other-process")
    assert await asyncio.wait_for(waiting, 5) is None  # created anew: the caller stores the bytes
    await commit(store, data)
    assert (await blobs.get(sha256))["refs"] == 1 and await store.size(sha256) == 500


async def test_a_dead_deleters_mark_is_taken_over(refs_parts):
    blobs, store = refs_parts
    refs = ContentRefs(blobs, store, stale=0.3)
    data = os.urandom(300)
    sha256 = hashlib.sha256(data).hexdigest()
    await refs.acquire(sha256, "m", 300, "x/y")
    await commit(store, data)
    await blobs.release(sha256)
    assert await blobs.mark_deleting(sha256, "died")  # ...and its process died here
    assert await asyncio.wait_for(refs.acquire(sha256, "m", 300, "x/y"), 5) is None
    assert (await blobs.get(sha256)).get("deleting") is None
    # the deletion was finished (content removed) before the document was made anew
    assert await store.size(sha256) is None
    assert refs_module.DELETE_STALE_SECONDS >= 30  # the default leaves room for a slow deleter
    # a stalled deleter that wakes up later finds its mark gone and removes nothing
    await commit(store, data)
    assert not await refs._delete(sha256, "died")
    assert await store.size(sha256) == 300


async def test_racing_acquires_and_releases_never_lose_a_held_reference(refs_parts):
    """Many holders come and go at once on one content; whoever holds a reference finds the
    content stored after committing, and the count ends exact."""
    blobs, store = refs_parts
    refs = ContentRefs(blobs, store)
    data = os.urandom(2000)
    sha256 = hashlib.sha256(data).hexdigest()
    lost = 0

    async def holder(i: int) -> None:
        nonlocal lost
        for _ in range(15):
            await refs.acquire(sha256, "m", 2000, "x/y")
            await commit(store, data)
            await asyncio.sleep(0.001 * (i % 3))
            if await store.size(sha256) != 2000:
                lost += 1
            await refs.release(sha256)

    await asyncio.gather(*(holder(i) for i in range(8)))
    assert lost == 0
    doc = await blobs.get(sha256)
    assert doc is None or (doc["refs"] == 0 and doc.get("deleting") is None)
    assert doc is not None or await store.size(sha256) is None


async def test_fsck_clears_a_mark_on_content_files_use(refs_parts):
    blobs, _store = refs_parts
    await blobs.create("a" * 64, "m", 1, "x/y")
    await blobs.c.update_one({"_id": "a" * 64}, {"$set": {"refs": 0, "deleting": "x", "deleting_at": dt.datetime.now(dt.UTC)}})
    await blobs.set_refs("a" * 64, 2)
    doc = await blobs.get("a" * 64)
    assert doc["refs"] == 2 and "deleting" not in doc and await blobs.add_ref("a" * 64)
