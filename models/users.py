"""users: one document per bare JID; `used` moves only by atomic $inc.

A quota reservation is one conditional `$inc` on `_id` whose filter names the stored `quota` and
bounds `used` by it: `{_id, quota: q, used: {$lte: limit(q) - size}}`. It matches only if the
quota is still `q` and the size fits, at the moment of the write, so it is as exact as comparing
the two fields in the filter (`$expr`) — which the embedded database cannot answer from `_id` and
runs as a scan of every user (about 100 ms at 10 000 users). `q` is a hint: the quota this process
last read for the user (None, the default, when it read none); a wrong hint fails the write, the
document is read — refused if the size does not fit what it says, else the write is made again
with the quota it says.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow
from models.groups import Groups

RESERVE_TRIES = 4  # writes of one reservation whose quota hint keeps being wrong, then refused
HINTS = 10_000  # users whose stored quota a process remembers (reservation hints)


@dataclass
class Quota:
    quota: int
    used: int
    stored: int | None = field(default=None, compare=False)  # the stored field (None: the default)

    @property
    def available(self) -> int:
        return max(0, self.quota - self.used)


class Users:
    def __init__(self, collection: AsyncCollection, default_quota: int) -> None:
        self.c = collection
        self.default_quota = default_quota
        self._stored: dict[str, int | None] = {}  # jid -> its stored quota as last read here
        self._reads: Groups[str, dict | None] = Groups(self._read_group)

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
        """The user's quota and use, read after the call began. Group commit for reads
        (models/groups.py): the reads asked for while one is answered go together as the next,
        one `_id $in` read (the `_id` index) for all of them."""
        return self._seen(jid, await self._reads.submit(jid))

    async def _read_group(self, jids: list[str]) -> list[dict | None]:
        # no projection: a user document is five small fields, and a projection costs an embedded
        # SecantusDB more (it compiles the projection and copies what it keeps) than it saves
        if len(jids) == 1:
            return [await self.c.find_one({"_id": jids[0]})]
        docs = await self.c.find({"_id": {"$in": sorted(set(jids))}}).to_list()
        by_id = {doc["_id"]: doc for doc in docs}
        return [by_id.get(jid) for jid in jids]

    def _seen(self, jid: str, doc: dict | None) -> Quota:
        """The quota in `doc` (as read just now), remembered as the hint for `reserve`."""
        if doc is not None:
            self._stored.pop(jid, None)
            self._stored[jid] = doc.get("quota")
            if len(self._stored) > HINTS:
                del self._stored[next(iter(self._stored))]  # the least recently read
        return self.quota_of(doc)

    def quota_of(self, doc: dict | None) -> Quota:
        if doc is None:
            return Quota(self.default_quota, 0)
        quota = doc.get("quota")
        return Quota(self.default_quota if quota is None else quota, doc.get("used", 0), quota)

    async def reserve(self, jid: str, size: int) -> bool:
        """Add `size` to `used` only if it still fits the quota: one atomic conditional update
        (the module's docstring), plus a read and a second write when the quota hint was wrong."""
        stored = self._stored.get(jid)
        for _ in range(RESERVE_TRIES):
            limit = self.default_quota if stored is None else stored
            result = await self.c.update_one(
                {"_id": jid, "quota": stored, "used": {"$lte": limit - size}}, {"$inc": {"used": size}}
            )
            if result.matched_count == 1:
                return True
            doc = await self.c.find_one({"_id": jid}, {"quota": 1, "used": 1})
            if doc is None:
                return False
            seen = self._seen(jid, doc)
            if seen.used + size > seen.quota:
                return False  # it does not fit (at the moment of this read)
            stored = seen.stored  # the hint was wrong (or room was made since): again
        return False

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
        return None if doc is None else self._seen(jid, doc)

    async def page(self, domain: str | None, number: int, per_page: int) -> tuple[int, list[dict]]:
        """One page of users (all, or those of one domain), ordered by JID."""
        q: dict = {} if domain is None else {"_id": {"$regex": "@" + re.escape(domain) + "$"}}
        total = await self.c.count_documents(q)
        skip = (number - 1) * per_page
        if skip >= total:
            return total, []
        return total, await self.c.find(q).sort("_id", ASCENDING).skip(skip).limit(per_page).to_list()
