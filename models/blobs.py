"""blobs: one document per distinct content (sha256) with the count of files that use it.

The reference protocol (services/refs.py, argued in docs/architecture.md) needs only these single
document operations, each atomic on its own: a reference is added only to a document that is not
being deleted, or the document is created with it; a document is marked for deletion only at zero
references, by one caller (the marker is a token); only the holder of the marker deletes the
document.
"""

from __future__ import annotations

import enum

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow


class Taken(enum.Enum):
    ADDED = "added"  # one more reference to a document that is not being deleted
    CREATED = "created"  # no document had this _id: it was made, with this first reference
    BLOCKED = "blocked"  # a document exists that is being deleted (or was made a moment ago)


class Blobs:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def take_ref(self, sha256: str, md5: str, size: int, media_type: str) -> Taken:
        """One reference, in one atomic command: `$inc refs` on the document if it is not being
        deleted; if no document matches, the upsert inserts `{_id, refs: 1, ...}` — which collides
        (duplicate key) with a document that exists but is being deleted, so none is added to it.
        The collision also comes from another first reference that inserted a moment earlier
        (MongoDB does not retry an upsert whose filter is more than equality on _id): BLOCKED
        says only "look at the document and try again"."""
        try:
            result = await self.c.update_one(
                {"_id": sha256, "deleting": {"$exists": False}},
                {
                    "$inc": {"refs": 1},
                    "$setOnInsert": {"md5": md5, "size": size, "media_type": media_type, "created_at": utcnow()},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return Taken.BLOCKED
        return Taken.CREATED if result.upserted_id is not None else Taken.ADDED

    async def mark_deleting(self, sha256: str, token: str) -> bool:
        """Claim the deletion of unreferenced content: from now on no reference can be added."""
        result = await self.c.update_one(
            {"_id": sha256, "refs": {"$lte": 0}, "deleting": {"$exists": False}},
            {"$set": {"deleting": token, "deleting_at": utcnow()}},
        )
        return result.matched_count == 1

    async def take_over(self, sha256: str, stale: str, token: str) -> bool:
        """Claim a deletion whose claimant stopped (its marker is `stale`)."""
        result = await self.c.update_one(
            {"_id": sha256, "deleting": stale}, {"$set": {"deleting": token, "deleting_at": utcnow()}}
        )
        return result.matched_count == 1

    async def is_marked(self, sha256: str, token: str) -> bool:
        return await self.c.find_one({"_id": sha256, "deleting": token}, {"_id": 1}) is not None

    async def delete_marked(self, sha256: str, token: str) -> bool:
        """Remove the document of content whose deletion `token` claimed (and finished)."""
        result = await self.c.delete_one({"_id": sha256, "deleting": token})
        return result.deleted_count == 1

    async def release(self, sha256: str) -> int:
        """Drop a reference; returns the references left."""
        await self.c.update_one({"_id": sha256}, {"$inc": {"refs": -1}})
        doc = await self.c.find_one({"_id": sha256}, {"refs": 1})
        return 0 if doc is None else doc["refs"]

    async def delete_unreferenced(self, sha256: str) -> bool:
        """Remove the document of unreferenced content that nobody is deleting (its content is the
        caller's business: fsck, or a forgotten reference)."""
        result = await self.c.delete_one({"_id": sha256, "refs": {"$lte": 0}, "deleting": {"$exists": False}})
        return result.deleted_count == 1

    async def get(self, sha256: str) -> dict | None:
        return await self.c.find_one({"_id": sha256})

    async def set_meta(self, sha256: str, fields: dict) -> None:
        await self.c.update_one({"_id": sha256}, {"$set": fields})

    async def all(self) -> list[dict]:
        return await self.c.find({}, {"refs": 1}).to_list()

    async def set_refs(self, sha256: str, refs: int) -> None:
        """fsck (service stopped): the count recomputed from the files; a deletion left half done
        by a crash is forgotten (content that files use is not deleted)."""
        await self.c.update_one({"_id": sha256}, {"$set": {"refs": refs}, "$unset": {"deleting": "", "deleting_at": ""}})

    async def insert(self, doc: dict) -> None:
        await self.c.insert_one(doc)
