"""slots: XEP-0363 upload slots, one document per slot, from issue to their end.

A document: `_id` = the slot id (also the file's slot_id once uploaded), `owner` (bare JID),
`name` (the cleaned file name), `size`, `content_type`, `context` (the upload purpose),
`expires_before` (ephemeral uploads), `created_at`, `expires` (the end of the slot and of its PUT
token), `state` and, once the slot has reached an end, `purge_at` (TTL index: the document goes a
day later).

States: `issued` (its size is reserved in the owner's `used`) -> `uploading` (a PUT has claimed
it; the reservation was handed back and the upload's own atomic quota check at commit applies)
-> `used` (the file exists) or `failed` (the PUT did not finish); `issued` -> `expired` (nobody
PUT in time; the reservation handed back). Every transition is one conditional update on the
current state, so of two processes only one makes it, and only that one moves the quota.
A document without `purge_at` is never removed by the TTL monitor: an issued slot whose
reservation has not been handed back stays until a sweep (or fsck) ends it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection

from models.db import utcnow

ISSUED = "issued"
UPLOADING = "uploading"
USED = "used"
FAILED = "failed"
EXPIRED = "expired"
KEEP_ENDED = dt.timedelta(days=1)  # how long an ended slot's document stays (409/410 answers)


@dataclass
class Slot:
    id: str
    owner: str
    name: str
    size: int
    content_type: str | None
    context: str
    expires_before: dt.datetime | None
    created_at: dt.datetime
    expires: dt.datetime
    state: str = ISSUED

    @classmethod
    def from_doc(cls, doc: dict) -> Slot:
        return cls(
            id=doc["_id"],
            owner=doc["owner"],
            name=doc["name"],
            size=doc["size"],
            content_type=doc.get("content_type"),
            context=doc.get("context") or "message",
            expires_before=doc.get("expires_before"),
            created_at=doc["created_at"],
            expires=doc["expires"],
            state=doc.get("state", ISSUED),
        )

    def as_doc(self) -> dict:
        return {
            "_id": self.id,
            "owner": self.owner,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "context": self.context,
            "expires_before": self.expires_before,
            "created_at": self.created_at,
            "expires": self.expires,
            "state": self.state,
        }


class Slots:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def insert(self, slot: Slot) -> None:
        await self.c.insert_one(slot.as_doc())

    async def get(self, slot_id: str) -> Slot | None:
        doc = await self.c.find_one({"_id": slot_id})
        return None if doc is None else Slot.from_doc(doc)

    async def move(self, slot_id: str, before: str, after: str) -> bool:
        """One transition; True only for the caller whose update made it."""
        update: dict = {"state": after}
        if after in (USED, FAILED, EXPIRED):
            update["purge_at"] = utcnow() + KEEP_ENDED
        result = await self.c.update_one({"_id": slot_id, "state": before}, {"$set": update})
        return result.modified_count == 1

    async def expired_issued(self, now: dt.datetime, limit: int = 500) -> list[Slot]:
        """Issued slots whose time is up (their reservations are still held)."""
        cursor = self.c.find({"state": ISSUED, "expires": {"$lte": now}}).limit(limit)
        return [Slot.from_doc(doc) async for doc in cursor]

    async def issued_of(self, owner: str) -> list[Slot]:
        """The owner's issued slots (expired or not): what their reservations are."""
        return [Slot.from_doc(doc) async for doc in self.c.find({"owner": owner, "state": ISSUED})]

    async def end_expired(self, now: dt.datetime) -> int:
        """fsck (the service stopped): end every issued slot whose time is up, without handing
        anything back (fsck recomputes `used`); returns how many."""
        result = await self.c.update_many(
            {"state": ISSUED, "expires": {"$lte": now}}, {"$set": {"state": EXPIRED, "purge_at": now + KEEP_ENDED}}
        )
        return result.modified_count

    async def reserved_by_owner(self) -> dict[str, int]:
        """fsck: the bytes each owner's issued slots hold."""
        cursor = await self.c.aggregate([{"$match": {"state": ISSUED}}, {"$group": {"_id": "$owner", "n": {"$sum": "$size"}}}])
        return {doc["_id"]: doc["n"] async for doc in cursor}
