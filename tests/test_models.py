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


async def test_quota_reservation_with_a_stale_hint_stays_exact(settings):
    """The reservation names the quota this process last read (a hint). Another process's admin
    changes it: the write misses, the document is read, the write made again with the new quota;
    lowered, it refuses what no longer fits; never more than the quota is reserved. With a right
    hint a reservation is one command."""
    from models.users import Users

    databases = [Database(settings.mongodb.uri, settings.mongodb.database) for _ in range(2)]
    try:
        here, admin = Users(databases[0].users, 10_000), Users(databases[1].users, 10_000)
        jid = "hint@example.org"
        await databases[0].users.delete_one({"_id": jid})
        await here.ensure(jid)
        assert (await here.quota(jid)).stored is None  # the default: the hint is None
        sent: list[str] = []
        databases[0].commands.count = sent.append
        assert await here.reserve(jid, 4000)
        assert sent == ["update"]  # the hint was right: one conditional $inc
        assert await admin.set_quota(jid, 5000) is not None  # elsewhere: lowered
        sent.clear()
        assert not await here.reserve(jid, 2000)  # 4000 + 2000 > 5000
        assert sent == ["update", "find"]  # the stale hint missed, the read showed it cannot fit
        assert await here.reserve(jid, 1000)  # the new hint is right: fits exactly
        assert (await admin.quota(jid)).used == 5000
        assert await admin.set_quota(jid, 20_000) is not None  # raised elsewhere
        results = await asyncio.gather(*(here.reserve(jid, 1000) for _ in range(30)))
        assert results.count(True) == 15
        assert (await admin.quota(jid)).used == 20_000
        assert not await here.reserve("nobody@example.org", 1)  # no such user: nothing to reserve in
    finally:
        databases[0].commands.count = lambda name: None
        for db in databases:
            await db.close()
