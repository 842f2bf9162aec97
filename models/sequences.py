"""sequences: integer ids that are never reused (the Xabber apps need integer file ids).

One document per sequence holds the highest id handed out. A process takes a block of ids with
one atomic $inc and hands them out from memory, so an insert costs no extra round trip; a block
left unused when the process stops is skipped, never reused.
"""

from __future__ import annotations

import asyncio

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

BLOCK = 64


class IdSequence:
    def __init__(self, collection: AsyncCollection, name: str, block: int = BLOCK) -> None:
        self.c = collection
        self.name = name
        self.block = block
        self._next = 0
        self._end = 0  # the ids in [_next, _end) are this process's
        self._lock = asyncio.Lock()

    async def next(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    await self._take(self.block)
        value = self._next
        self._next += 1
        return value

    async def _take(self, count: int) -> None:
        # Several processes taking the first block of a new sequence race in the upsert: one may
        # get a duplicate key error, or (SecantusDB) no document back. Both mean the document
        # exists now: try again (a block taken but not returned is skipped, never reused).
        for _ in range(5):
            try:
                doc = await self.c.find_one_and_update(
                    {"_id": self.name}, {"$inc": {"last": count}}, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                doc = None
            if doc is not None:
                break
        else:
            raise RuntimeError(f"could not take ids from the sequence {self.name!r}")
        self._end = doc["last"] + 1
        self._next = self._end - count

    async def at_least(self, value: int) -> None:
        """Never hand out `value` or less (after ids were written by other means)."""
        await self.c.update_one({"_id": self.name}, {"$max": {"last": value}}, upsert=True)
