"""ratelimits: fixed-window counters shared by every process through MongoDB."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError


class RateLimits:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def hit(self, key: str, limit: int, window: int) -> int | None:
        """Count one event for `key`; None if within `limit` per `window` seconds, else the
        seconds to wait before the window ends (for Retry-After)."""
        now = time.time()
        start = math.floor(now / window) * window
        end = start + window
        count = await self._increment(f"{key}:{int(start)}", dt.datetime.fromtimestamp(end + 60, dt.UTC))
        if count <= limit:
            return None
        return max(1, math.ceil(end - now))

    async def _increment(self, counter: str, expires: dt.datetime) -> int:
        """$inc on an existing counter; a missing one is inserted first. (An upsert is not used:
        two first hits racing in one upsert can both count, or neither see a document.)"""
        for _ in range(2):
            doc = await self.c.find_one_and_update(
                {"_id": counter}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER, projection={"n": 1}
            )
            if doc is not None:
                return doc["n"]
            with contextlib.suppress(DuplicateKeyError):  # another hit created it: increment that one
                await self.c.insert_one({"_id": counter, "n": 0, "expires": expires})
        raise RuntimeError(f"rate-limit counter {counter} vanished")  # pragma: no cover
