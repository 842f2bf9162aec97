"""The models against the real database server, where concurrency bugs live."""

from __future__ import annotations

import asyncio


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
