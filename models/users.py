"""users: one document per bare JID; `used` moves only by atomic $inc."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow


@dataclass
class Quota:
    quota: int
    used: int

    @property
    def available(self) -> int:
        return max(0, self.quota - self.used)


class Users:
    def __init__(self, collection: AsyncCollection, default_quota: int) -> None:
        self.c = collection
        self.default_quota = default_quota

    async def ensure(self, jid: str) -> None:
        """Create the user on first login; record the login."""
        now = utcnow()
        try:
            await self.c.insert_one({"_id": jid, "quota": None, "used": 0, "created_at": now, "last_login": now})
        except DuplicateKeyError:
            await self.c.update_one({"_id": jid}, {"$set": {"last_login": now}})

    async def get(self, jid: str) -> dict | None:
        return await self.c.find_one({"_id": jid})

    async def quota(self, jid: str) -> Quota:
        doc = await self.c.find_one({"_id": jid}, {"quota": 1, "used": 1})
        return self.quota_of(doc)

    def quota_of(self, doc: dict | None) -> Quota:
        if doc is None:
            return Quota(self.default_quota, 0)
        quota = doc.get("quota")
        return Quota(self.default_quota if quota is None else quota, doc.get("used", 0))

    async def reserve(self, jid: str, size: int) -> bool:
        """Add `size` to `used` only if it still fits the quota: one atomic update."""
        result = await self.c.update_one(
            {
                "_id": jid,
                "$expr": {"$lte": [{"$add": ["$used", size]}, {"$ifNull": ["$quota", self.default_quota]}]},
            },
            {"$inc": {"used": size}},
        )
        return result.modified_count == 1 or (result.matched_count == 1 and size == 0)

    async def release(self, jid: str, size: int) -> None:
        await self.c.update_one({"_id": jid}, {"$inc": {"used": -size}})

    async def set_used(self, jid: str, used: int) -> bool:
        """fsck: correct `used` if it differs; True when it did."""
        result = await self.c.update_one({"_id": jid, "used": {"$ne": used}}, {"$set": {"used": used}})
        return result.modified_count == 1

    async def all_ids(self) -> list[str]:
        return [doc["_id"] async for doc in self.c.find({}, {"_id": 1})]
