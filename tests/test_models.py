"""The models against the real database server, where concurrency bugs live."""

from __future__ import annotations

import asyncio
import secrets

from models import counters as cn
from models.counters import kind_of
from models.db import Database, utcnow
from models.files import Files, SlotTaken
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


def _file(file_id: int, owner: str, slot_id: str, size: int, media_type: str, created_at) -> dict:
    return {
        "_id": file_id,
        "owner": owner,
        "slot_id": slot_id,
        "name": f"{file_id}.bin",
        "sha256": f"{file_id:064x}",
        "md5": f"{file_id:032x}",
        "size": size,
        "media_type": media_type,
        "kind": kind_of(media_type, None),
        "is_avatar": False,
        "context": None,
        "metadata": None,
        "thumbnail": None,
        "width": None,
        "height": None,
        "created_at": created_at,
        "expires_at": None,
    }


async def test_concurrent_file_inserts_share_commands_and_each_succeeds_or_fails_alone(settings):
    """Group commit: inserts that arrive together go as one insert_many and one counter command;
    a slot_id taken already fails only its own insert (SlotTaken), whose counters do not move; the
    counters end exactly what fsck would compute from the files."""
    db = Database(settings.mongodb.uri, settings.mongodb.database)
    try:
        await db.ensure_indexes()
        files = Files(db.files)
        owners = ["g1@example.org", "g2@example.org"]
        await db.files.delete_many({"owner": {"$in": owners}})
        await db.db["file_counts"].delete_many({"owner": {"$in": owners}})
        base = 9_000_000 + secrets.randbelow(10**6) * 100
        now = utcnow()
        taken = f"taken-{base}"
        await files.insert(_file(base, owners[0], taken, 10, "image/png", now))
        docs = [
            _file(base + i, owners[i % 2], f"g-{base}-{i}", 100 + i, ("image/png", "audio/ogg", "text/plain")[i % 3], now)
            for i in range(1, 25)
        ]
        docs[6]["slot_id"] = taken  # a second upload for a slot that has its file already
        sent: list[str] = []
        db.commands.count = sent.append
        try:
            results = await asyncio.gather(*(files.insert(doc) for doc in docs), return_exceptions=True)
        finally:
            db.commands.count = lambda name: None
        assert [i for i, r in enumerate(results) if r is not None] == [6]
        assert isinstance(results[6], SlotTaken)
        assert sent.count("insert") < len(docs) and sent.count("insert") == sent.count("update")
        assert sent.count("insert") <= 3  # the first alone, then the rest in one or two groups
        kept = [doc for i, doc in enumerate(docs) if i != 6]
        assert await db.files.count_documents({"owner": {"$in": owners}}) == len(kept) + 1
        stored = {doc["_id"]: cn.normal(doc) async for doc in db.db["file_counts"].find({"owner": {"$in": owners}})}
        expected = cn.build([await db.files.find_one({"_id": base}), *kept])
        assert stored == expected
    finally:
        await db.close()


async def test_concurrent_quota_reads_share_a_command_and_each_sees_its_own_user(settings):
    """Reads asked for while one is answered go as one `_id $in` read; each caller gets its own
    user's figures, read after its call began (a reservation made before the call shows)."""
    from models.users import Users

    db = Database(settings.mongodb.uri, settings.mongodb.database)
    try:
        users = Users(db.users, 10_000)
        jids = [f"reader{i}@example.org" for i in range(6)]
        await db.users.delete_many({"_id": {"$in": jids}})
        for i, jid in enumerate(jids):
            await users.ensure(jid)
            assert await users.reserve(jid, 100 * (i + 1))
        sent: list[str] = []
        db.commands.count = sent.append
        try:
            quotas = await asyncio.gather(*(users.quota(jid) for jid in jids * 3), users.quota("none@example.org"))
        finally:
            db.commands.count = lambda name: None
        assert [q.used for q in quotas[:-1]] == [100 * (i + 1) for i in range(6)] * 3
        assert quotas[-1].used == 0 and quotas[-1].quota == 10_000  # no such user: the default
        assert sent == ["find"]  # all asked before the first read went out: one read for all
        assert await users.reserve(jids[0], 50)
        assert (await users.quota(jids[0])).used == 150
    finally:
        await db.close()


async def test_a_group_whose_command_fails_fails_each_request_and_a_cancelled_one_is_left_out():
    from models.groups import Groups

    sent: list[list[int]] = []

    async def send(items: list[int]) -> list:
        sent.append(items)
        await asyncio.sleep(0.01)
        if 13 in items:
            raise RuntimeError("the command failed")
        return [ValueError(item) if item < 0 else item * 2 for item in items]

    groups: Groups[int, int] = Groups(send)
    first = asyncio.ensure_future(groups.submit(1))
    await asyncio.sleep(0)
    late = [asyncio.ensure_future(groups.submit(item)) for item in (2, -3, 4)]
    gone = asyncio.ensure_future(groups.submit(5))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 2
    results = await asyncio.gather(*late, return_exceptions=True)
    assert results[0] == 4 and isinstance(results[1], ValueError) and results[2] == 8
    assert sent == [[1], [2, -3, 4]]  # the cancelled request never went out
    failing = await asyncio.gather(groups.submit(13), groups.submit(6), return_exceptions=True)
    assert sent[-1] == [13, 6] and all(isinstance(r, RuntimeError) for r in failing)
    assert await groups.submit(7) == 14  # the next group goes out as usual
