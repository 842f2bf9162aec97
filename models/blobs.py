"""blobs: one document per distinct content (sha256) with the count of files that use it."""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow


class Blobs:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    # Callers hold the content's lock (FileManager._locked), so reading and then changing one blob
    # document is not racing another change to it. Point reads and updates are used rather than
    # find-and-modify, which some MongoDB-compatible servers (SecantusDB) run as a collection scan.

    async def acquire(self, sha256: str, md5: str, size: int, media_type: str) -> dict | None:
        """Add a reference; returns the document as it was before (None: the blob is new)."""
        before = await self.c.find_one({"_id": sha256})
        if before is not None:
            await self.c.update_one({"_id": sha256}, {"$inc": {"refs": 1}})
            return before
        doc = {"_id": sha256, "md5": md5, "size": size, "media_type": media_type, "refs": 1, "created_at": utcnow()}
        try:
            await self.c.insert_one(doc)
        except DuplicateKeyError:  # another process inserted it first
            return await self.acquire(sha256, md5, size, media_type)
        return None

    async def release(self, sha256: str) -> int:
        """Drop a reference; returns the references left."""
        await self.c.update_one({"_id": sha256}, {"$inc": {"refs": -1}})
        doc = await self.c.find_one({"_id": sha256}, {"refs": 1})
        return 0 if doc is None else doc["refs"]

    async def delete_unreferenced(self, sha256: str) -> bool:
        result = await self.c.delete_one({"_id": sha256, "refs": {"$lte": 0}})
        return result.deleted_count == 1

    async def set_meta(self, sha256: str, fields: dict) -> None:
        await self.c.update_one({"_id": sha256}, {"$set": fields})

    async def all(self) -> list[dict]:
        return await self.c.find({}, {"refs": 1}).to_list()

    async def set_refs(self, sha256: str, refs: int) -> None:
        await self.c.update_one({"_id": sha256}, {"$set": {"refs": refs}})

    async def insert(self, doc: dict) -> None:
        await self.c.insert_one(doc)
