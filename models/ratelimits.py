"""ratelimits: fixed-window counters shared by every process through MongoDB."""

from __future__ import annotations

import datetime as dt
import math
import time

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError


class RateLimits:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def hit(self, key: str, limit: int, window: int) -> int | None:
        """Count one event for `key`; None if within `limit` per `window` seconds, else the
        seconds to wait before the window ends (for Retry-After). Only admitted events count."""
        now = time.time()
        start = math.floor(now / window) * window
        end = start + window
        if await self._admit(f"{key}:{int(start)}", limit, dt.datetime.fromtimestamp(end + 60, dt.UTC)):
            return None
        return max(1, math.ceil(end - now))

    async def _admit(self, counter: str, limit: int, expires: dt.datetime) -> bool:
        """One conditional upsert, a point write on _id (no find-and-modify): it counts the event
        if the counter is below `limit`, or creates the counter at 1. When the counter exists at
        the limit, the upsert's insert collides with it (duplicate key): refused. A collision can
        also be another first hit that created the counter a moment earlier, so a collision is
        decided by the same conditional update without the upsert."""
        below = {"_id": counter, "n": {"$lt": limit}}
        update = {"$inc": {"n": 1}, "$setOnInsert": {"expires": expires}}
        if limit <= 0:
            return False
        try:
            await self.c.update_one(below, update, upsert=True)
            return True
        except DuplicateKeyError:
            result = await self.c.update_one(below, {"$inc": {"n": 1}})
            return result.modified_count == 1
