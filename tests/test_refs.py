"""The content-reference protocol (services/refs.py) against the real database server and a real
store: no lock anywhere, deletions marked in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os

import pytest

from models.blobs import Blobs, Taken
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
    assert await blobs.take_ref(sha256, "m", 500, "x/y") is Taken.BLOCKED  # no reference added
    assert (await blobs.get(sha256))["refs"] == 0
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
    assert await blobs.take_ref("a" * 64, "m", 1, "x/y") is Taken.CREATED
    await blobs.c.update_one({"_id": "a" * 64}, {"$set": {"refs": 0, "deleting": "x", "deleting_at": dt.datetime.now(dt.UTC)}})
    await blobs.set_refs("a" * 64, 2)
    doc = await blobs.get("a" * 64)
    assert doc["refs"] == 2 and "deleting" not in doc
    assert await blobs.take_ref("a" * 64, "m", 1, "x/y") is Taken.ADDED


async def test_new_content_costs_one_command_and_racing_first_references_count_exactly(settings, tmp_path):
    """acquire is one upsert: new content one command (no document read), known content one more
    to read the document, none more when the caller does not read it. Many first references to
    one new content through separate clients (processes) race in the upsert: exactly one creates
    the document, and every reference counts."""
    dbs = [Database(settings.mongodb.uri, settings.mongodb.database) for _ in range(3)]
    try:
        await dbs[0].ensure_indexes()
        store = LocalStore(tmp_path / "files")
        store.prepare()
        sent: list[str] = []
        dbs[0].commands.count = sent.append
        refs = ContentRefs(Blobs(dbs[0].blobs), store)
        sha256 = hashlib.sha256(os.urandom(64)).hexdigest()
        assert await refs.acquire(sha256, "m", 64, "x/y") is None
        assert sent == ["update"]
        sent.clear()
        assert (await refs.acquire(sha256, "m", 64, "x/y"))["refs"] == 2
        assert sent == ["update", "find"]
        sent.clear()
        assert await refs.acquire(sha256, "m", 64, "x/y", read=False) == {"_id": sha256}
        assert sent == ["update"]
        dbs[0].commands.count = lambda name: None

        racing = hashlib.sha256(os.urandom(64)).hexdigest()
        holders = [ContentRefs(Blobs(db.blobs), store) for db in dbs]
        for _round in range(3):
            results = await asyncio.gather(*(holders[i % 3].acquire(racing, "m", 64, "x/y") for i in range(12)))
            assert sum(result is None for result in results) == (1 if _round == 0 else 0)
        doc = await Blobs(dbs[1].blobs).get(racing)
        assert doc["refs"] == 36 and doc["md5"] == "m" and doc["size"] == 64 and "deleting" not in doc
    finally:
        for db in dbs:
            await db.close()
