"""blobs: one document per distinct content (sha256) with the count of files that use it."""

from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from models.db import utcnow


class Blobs:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def acquire(self, sha256: str, md5: str, size: int, media_type: str) -> dict | None:
        """Add a reference; returns the document as it was before (None: the blob is new)."""
        return await self.c.find_one_and_update(
            {"_id": sha256},
            {
                "$inc": {"refs": 1},
                "$setOnInsert": {"md5": md5, "size": size, "media_type": media_type, "created_at": utcnow()},
            },
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )

    async def release(self, sha256: str) -> int:
        """Drop a reference; returns the references left."""
        doc = await self.c.find_one_and_update(
            {"_id": sha256}, {"$inc": {"refs": -1}}, return_document=ReturnDocument.AFTER, projection={"refs": 1}
        )
        return 0 if doc is None else doc["refs"]

    async def delete_unreferenced(self, sha256: str) -> bool:
        result = await self.c.delete_one({"_id": sha256, "refs": {"$lte": 0}})
        return result.deleted_count == 1

    async def get(self, sha256: str) -> dict | None:
        return await self.c.find_one({"_id": sha256})

    async def set_meta(self, sha256: str, fields: dict) -> None:
        await self.c.update_one({"_id": sha256}, {"$set": fields})

    async def all(self) -> list[dict]:
        return await self.c.find({}, {"refs": 1}).to_list()

    async def set_refs(self, sha256: str, refs: int) -> None:
        await self.c.update_one({"_id": sha256}, {"$set": {"refs": refs}})

    async def insert(self, doc: dict) -> None:
        await self.c.insert_one(doc)
