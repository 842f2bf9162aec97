"""servers: the processes at work on this database: servers, and fsck while it repairs.

Each process keeps one document (`_id` its holder name, `role`, `host`, `pid`, `pid_space` (its
PID namespace), `started_at`, `expires`) and pushes `expires` back every few seconds while it
runs; it removes the document when it stops.
A process that died stops counting at `expires` (the TTL index removes the document later).
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

SERVER = "server"
FSCK = "fsck"
LOCK = "lock"  # `_id` "lock:<name>": one process of the deployment at a time does <name>


class Servers:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection

    async def announce(
        self, holder: str, role: str, host: str, pid: int, pid_space: int | None, now: dt.datetime, expires: dt.datetime
    ) -> None:
        fields = {"role": role, "host": host, "pid": pid, "pid_space": pid_space, "expires": expires}
        await self.c.update_one(
            {"_id": holder},
            {"$set": fields, "$setOnInsert": {"started_at": now}},
            upsert=True,
        )

    async def leave(self, holder: str) -> None:
        await self.c.delete_one({"_id": holder})

    async def alive(self, now: dt.datetime, role: str) -> list[dict]:
        """The processes of `role` whose document has not expired: `host` and `pid` of each
        (a range of the `expires` index: a handful of documents)."""
        docs = await self.c.find({"expires": {"$gt": now}}, {"role": 1, "host": 1, "pid": 1, "pid_space": 1}).to_list(None)
        return [doc for doc in docs if doc.get("role") == role]

    async def take_lock(self, name: str, holder: str, now: dt.datetime, expires: dt.datetime) -> bool:
        """The lock `name` for `holder`, unless another holds it; one whose holder stopped
        renewing it (it died) is removed, for the next try to take."""
        try:
            await self.c.insert_one({"_id": f"lock:{name}", "role": LOCK, "holder": holder, "expires": expires})
            return True
        except DuplicateKeyError:
            await self.c.delete_one({"_id": f"lock:{name}", "expires": {"$lte": now}})
            return False

    async def renew_lock(self, name: str, holder: str, expires: dt.datetime) -> None:
        await self.c.update_one({"_id": f"lock:{name}", "holder": holder}, {"$set": {"expires": expires}})

    async def drop_lock(self, name: str, holder: str) -> None:
        await self.c.delete_one({"_id": f"lock:{name}", "holder": holder})
