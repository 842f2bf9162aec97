"""users: one document per bare JID; `used` moves only by atomic $inc."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from pymongo import ASCENDING, ReturnDocument
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

    async def create(self, jid: str) -> None:
        """A user record without a login, if there is none (a first upload over XMPP)."""
        with contextlib.suppress(DuplicateKeyError):  # a concurrent first request created it
            await self.c.update_one(
                {"_id": jid},
                {"$setOnInsert": {"quota": None, "used": 0, "created_at": utcnow(), "last_login": None}},
                upsert=True,
            )

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

    async def delete(self, jid: str) -> bool:
        result = await self.c.delete_one({"_id": jid})
        return result.deleted_count == 1

    async def set_quota(self, jid: str, quota: int) -> Quota | None:
        """An admin's quota for an existing user; None if there is no such user."""
        doc = await self.c.find_one_and_update(
            {"_id": jid}, {"$set": {"quota": quota}}, projection={"quota": 1, "used": 1}, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else self.quota_of(doc)

    async def page(self, domain: str | None, number: int, per_page: int) -> tuple[int, list[dict]]:
        """One page of users (all, or those of one domain), ordered by JID."""
        q: dict = {} if domain is None else {"_id": {"$regex": "@" + re.escape(domain) + "$"}}
        total = await self.c.count_documents(q)
        skip = (number - 1) * per_page
        if skip >= total:
            return total, []
        return total, await self.c.find(q).sort("_id", ASCENDING).skip(skip).limit(per_page).to_list()
