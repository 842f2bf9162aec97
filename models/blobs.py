"""blobs: one document per distinct content (sha256) with the count of files that use it.

The reference protocol (services/refs.py, argued in docs/architecture.md) needs only these single
document operations, each atomic on its own: a reference is added only to a document that is not
being deleted; a document is marked for deletion only at zero references, by one caller (the
marker is a token); only the holder of the marker deletes the document.
"""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow


class Blobs:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def add_ref(self, sha256: str) -> bool:
        """One more reference to content whose document exists and is not being deleted."""
        result = await self.c.update_one({"_id": sha256, "deleting": {"$exists": False}}, {"$inc": {"refs": 1}})
        return result.matched_count == 1

    async def create(self, sha256: str, md5: str, size: int, media_type: str) -> bool:
        """The document of new content, with its first reference; False if one exists."""
        doc = {"_id": sha256, "md5": md5, "size": size, "media_type": media_type, "refs": 1, "created_at": utcnow()}
        try:
            await self.c.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

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
