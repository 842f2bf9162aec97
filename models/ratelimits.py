"""ratelimits: fixed-window counters shared by every process through MongoDB."""

from __future__ import annotations

import datetime as dt
import math
import time

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection


class RateLimits:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def hit(self, key: str, limit: int, window: int) -> int | None:
        """Count one event for `key`; None if within `limit` per `window` seconds, else the
        seconds to wait before the window ends (for Retry-After)."""
        now = time.time()
        start = math.floor(now / window) * window
        end = start + window
        doc = await self.c.find_one_and_update(
            {"_id": f"{key}:{int(start)}"},
            {"$inc": {"n": 1}, "$setOnInsert": {"expires": dt.datetime.fromtimestamp(end + 60, dt.UTC)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection={"n": 1},
        )
        if doc["n"] <= limit:
            return None
        return max(1, math.ceil(end - now))
