"""The models against the real database server, where concurrency bugs live."""

from __future__ import annotations

import asyncio

from models.db import Database
from models.sequences import IdSequence


async def test_concurrent_first_hits_are_all_counted(service):
    """Regression: racing upserts on a new counter returned no document (a 500 on upload)."""
    limits = service.parts.ratelimits
    for round_ in range(10):
        results = await asyncio.gather(*(limits.hit(f"race{round_}", 15, 3600) for _ in range(30)))
        assert results.count(None) == 15
        assert all(isinstance(r, int) and r >= 1 for r in results if r is not None)
        # the admitted hits are counted; the refused ones leave the counter at the limit
        assert (await service.parts.db.ratelimits.find_one({"_id": {"$regex": f"^race{round_}:"}}))["n"] == 15


async def test_quota_reservation_is_atomic(service):
    users = service.parts.users
    await users.ensure("q@example.org")
    await service.parts.db.users.update_one({"_id": "q@example.org"}, {"$set": {"quota": 1000}})
    results = await asyncio.gather(*(users.reserve("q@example.org", 100) for _ in range(30)))
    assert results.count(True) == 10
    assert (await users.quota("q@example.org")).used == 1000


async def test_processes_taking_a_new_sequences_first_blocks_get_distinct_ids(settings):
    """Regression: several processes' first `next()` on a fresh sequence raced in its upsert, and
    SecantusDB answered some of them with no document (a TypeError: a 500 on an upload)."""
    databases = [Database(settings.mongodb.uri, settings.mongodb.database) for _ in range(4)]
    try:
        for round_ in range(15):
            sequences = [IdSequence(db.db["sequences"], f"race{round_}", block=8) for db in databases]
            ids = await asyncio.gather(*(seq.next() for seq in sequences for _ in range(3)))
            assert len(set(ids)) == len(ids)
    finally:
        for db in databases:
            await db.close()
