"""servers: the server processes running against this database.

Each process keeps one document (`_id` its holder name, `host`, `pid`, `started_at`, `expires`)
and pushes `expires` back every few seconds while it runs; it removes the document when it stops.
A process that died stops counting at `expires` (the TTL index removes the document later).
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.collection import AsyncCollection


class Servers:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def announce(self, holder: str, host: str, pid: int, now: dt.datetime, expires: dt.datetime) -> None:
        await self.c.update_one(
            {"_id": holder},
            {"$set": {"host": host, "pid": pid, "expires": expires}, "$setOnInsert": {"started_at": now}},
            upsert=True,
        )

    async def leave(self, holder: str) -> None:
        await self.c.delete_one({"_id": holder})

    async def alive(self, now: dt.datetime) -> list[dict]:
        """The processes whose document has not expired: `host` and `pid` of each."""
        cursor = self.c.find({"expires": {"$gt": now}}, {"host": 1, "pid": 1})
        return await cursor.to_list(None)
