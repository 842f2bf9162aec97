"""leases: the uploads in flight in the whole deployment.

Every admitted upload holds exactly one lease: one of its owner's numbered slots (`_id`
"<owner>:<k>", k below the per-user limit; the unique `_id` is what makes that limit exact). The
same documents, counted, are the uploads in flight in the whole deployment (the global limit,
services/admission.py). Each names its `holder` (the server process, which renews all its leases
every few seconds) and `expires`, when it stops counting if its holder died without giving it
back; the TTL index removes expired leases later, and a slot whose lease expired is taken over at
once. The holder knows which slots it holds: every write names them by `_id`, and the one index
besides `_id` is the TTL index on `expires`, which the count's range also reads (an insert and a
delete per upload pay for no other index).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.groups import Groups

USER = "user"  # (an earlier version also kept "all" leases: one per upload, beside its slot)


class Leases:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection
        self._counts: Groups[dt.datetime, int] = Groups(self._count_group)

    async def take_slot(
        self, owner: str, slots: int, holder: str, now: dt.datetime, expires: dt.datetime, mine: Collection[str] = ()
    ) -> str | None:
        """One of the owner's `slots` slots, or None when every one is held. The slots are tried
        from a random one on (each once), so uploads in flight rarely try a held slot first: from
        slot 0, the n-th upload in flight tried n - 1 held ones, two commands each. `mine`: the
        slots the caller's process holds itself (held for certain: not tried)."""
        first = secrets.randbelow(max(slots, 1))
        for k in range(slots):
            slot = f"{owner}:{(first + k) % slots}"
            if slot in mine:
                continue
            for _attempt in range(2):
                try:
                    await self.c.insert_one({"_id": slot, "scope": USER, "holder": holder, "expires": expires})
                    return slot
                except DuplicateKeyError:
                    # held; unless its holder died: then free it (one taker wins) and try again
                    freed = await self.c.delete_one({"_id": slot, "expires": {"$lte": now}})
                    if not freed.deleted_count:
                        break
        return None

    async def count(self, now: dt.datetime) -> int:
        """Unexpired slots of every owner: the uploads in flight in the whole deployment (a range
        read of the `expires` TTL index; `scope` is checked on the few documents it returns: an
        earlier version's other leases, which expire within LEASE_SECONDS, are not counted).
        Group commit (models/groups.py): the counts asked for while one is under way share the
        next; a count that begins after a caller's slot was inserted is as good for it as its own
        (services/admission.py)."""
        return await self._counts.submit(now)

    async def _count_group(self, moments: list[dt.datetime]) -> list[int]:
        found = await self.c.count_documents({"expires": {"$gt": max(moments)}, "scope": USER})
        return [found] * len(moments)

    async def drop(self, lease: str, holder: str) -> None:
        await self.c.delete_one({"_id": lease, "holder": holder})

    async def renew(self, holder: str, leases: Collection[str], expires: dt.datetime) -> int:
        """Push back the expiry of the holder's `leases` (by _id; one whose holder is another,
        after it expired and was taken over, is left alone); returns how many."""
        if not leases:
            return 0
        result = await self.c.update_many({"_id": {"$in": sorted(leases)}, "holder": holder}, {"$set": {"expires": expires}})
        return result.matched_count

    async def drop_all(self, holder: str, leases: Collection[str]) -> int:
        """Give back the holder's `leases` (by _id); returns how many were still held."""
        if not leases:
            return 0
        result = await self.c.delete_many({"_id": {"$in": sorted(leases)}, "holder": holder})
        return result.deleted_count
