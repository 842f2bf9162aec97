"""The database handle: client, collections and the indexes every query relies on."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger("gallery.db")


def utcnow() -> dt.datetime:
    """Now, in UTC, at MongoDB's millisecond precision."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# Every index costs every write of its collection (a real MongoDB updates each one; SecantusDB
# also reads and decodes every index's metadata per write, docs/performance.md "What an index
# costs"), so a collection written on an upload, a slot, a component PUT or a login keeps only
# the indexes some query of the service needs; why each stays: docs/performance.md.
INDEXES: dict[str, list[IndexModel]] = {
    "users": [],  # every read and write is by _id (the admin listing pages by _id too)
    "tokens": [
        IndexModel([("hash", ASCENDING)], unique=True),  # every authenticated request
        IndexModel([("owner", ASCENDING)]),  # an owner's tokens: list, revoke all
        IndexModel([("expires", ASCENDING)], expireAfterSeconds=0),
    ],
    "codes": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    "files": [
        IndexModel([("slot_id", ASCENDING)], unique=True),  # downloads
        IndexModel([("owner", ASCENDING), ("is_avatar", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("owner", ASCENDING), ("created_at", DESCENDING)]),  # avatars and files together
        # slot dedup: one point lookup by whichever digest the client names
        IndexModel([("owner", ASCENDING), ("md5", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("sha256", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("sha1", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)]),  # the expiry sweeper's query
        IndexModel([("owner", ASCENDING), ("expires_at", ASCENDING)]),  # when an owner's files free room
    ],
    "file_counts": [],  # by _id: "owner", "owner/YYYY-MM", "owner/YYYY-MM-DD" (models/counters.py)
    "blobs": [],  # by _id (the sha256)
    "ratelimits": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    "slots": [
        IndexModel([("state", ASCENDING), ("expires", ASCENDING)]),  # the sweeper of unused slots
        IndexModel([("owner", ASCENDING), ("state", ASCENDING)]),  # an owner's issued slots
        IndexModel([("purge_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "servers": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    # the uploads in flight: the count is a range of this TTL index (models/leases.py)
    "leases": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
}

# Indexes an earlier version created that no query needs any more: dropped at start-up (by key,
# whatever their name; a missing one is no error), so their cost goes with them.
OBSOLETE: dict[str, list[list[tuple[str, int]]]] = {
    "users": [[("created_at", ASCENDING)]],
    "files": [[("owner", ASCENDING), ("media_type", ASCENDING)], [("sha256", ASCENDING)]],
    "file_counts": [[("owner", ASCENDING), ("span", ASCENDING), ("key", ASCENDING)]],
    "blobs": [[("refs", ASCENDING)]],
    "leases": [[("scope", ASCENDING), ("expires", ASCENDING)], [("holder", ASCENDING)]],
}
INDEX_NOT_FOUND = 27


def _key(spec) -> list[tuple[str, object]]:
    """An index key comparable across int/float directions; "hashed", "text", "2dsphere" as is."""
    return [(field, int(d) if isinstance(d, (int, float)) else d) for field, d in spec]


class CommandCounter(monitoring.CommandListener):
    """Tells `count` (the metrics' gallery_db_commands_total) the name of every command the client
    sends: what a request costs the database, independent of its engine."""

    def __init__(self) -> None:
        self.count: Callable[[str], None] = lambda name: None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class Database:
    """Owns the client; exposes each collection by name."""

    def __init__(self, uri: str, name: str, timeout: float = 5.0) -> None:
        ms = int(timeout * 1000)
        self.commands = CommandCounter()
        self.client: AsyncMongoClient = AsyncMongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, event_listeners=[self.commands]
        )
        self.db = self.client[name]
        self.users: AsyncCollection = self.db.users
        self.tokens: AsyncCollection = self.db.tokens
        self.codes: AsyncCollection = self.db.codes
        self.files: AsyncCollection = self.db.files
        self.blobs: AsyncCollection = self.db.blobs
        self.ratelimits: AsyncCollection = self.db.ratelimits
        self.slots: AsyncCollection = self.db.slots
        self.leases: AsyncCollection = self.db.leases
        self.servers: AsyncCollection = self.db.servers

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries need and drop those `OBSOLETE` lists (idempotent:
        every process runs it at start-up, several at once do no harm)."""
        for name, indexes in INDEXES.items():
            if indexes:
                await self.db[name].create_indexes(indexes)
        await self.drop_obsolete_indexes()

    async def drop_obsolete_indexes(self) -> list[str]:
        """Drop the indexes of `OBSOLETE` that exist; returns "collection.index" of each dropped."""
        dropped = []
        for name, keys in OBSOLETE.items():
            wanted = [_key(key) for key in keys]
            async for index in await self.db[name].list_indexes():
                key = _key(index["key"].items())
                if key not in wanted:
                    continue
                try:
                    await self.db[name].drop_index(index["name"])
                except OperationFailure as exc:
                    if exc.code != INDEX_NOT_FOUND:  # another process dropped it a moment ago
                        raise
                    continue
                dropped.append(f"{name}.{index['name']}")
                log.info("dropped the index %s.%s: no query uses it any more", name, index["name"])
        return dropped

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False

    async def close(self) -> None:
        await self.client.close()
