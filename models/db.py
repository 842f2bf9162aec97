"""The database handle: client, collections and the indexes every query relies on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError


def utcnow() -> dt.datetime:
    """Now, in UTC, at MongoDB's millisecond precision."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


INDEXES: dict[str, list[IndexModel]] = {
    "users": [IndexModel([("created_at", ASCENDING)])],
    "tokens": [
        IndexModel([("hash", ASCENDING)], unique=True),
        IndexModel([("owner", ASCENDING)]),
        IndexModel([("expires", ASCENDING)], expireAfterSeconds=0),
    ],
    "codes": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    "files": [
        IndexModel([("slot_id", ASCENDING)], unique=True),
        IndexModel([("owner", ASCENDING), ("is_avatar", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("owner", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("owner", ASCENDING), ("media_type", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("md5", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("sha256", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("sha1", ASCENDING)]),
        IndexModel([("sha256", ASCENDING)]),
        IndexModel([("expires_at", ASCENDING)]),  # the expiry sweeper's query
        IndexModel([("owner", ASCENDING), ("expires_at", ASCENDING)]),  # when an owner's files free room
    ],
    "file_counts": [IndexModel([("owner", ASCENDING), ("span", ASCENDING), ("key", ASCENDING)])],
    "blobs": [IndexModel([("refs", ASCENDING)])],
    "ratelimits": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    "slots": [
        IndexModel([("state", ASCENDING), ("expires", ASCENDING)]),
        IndexModel([("owner", ASCENDING), ("state", ASCENDING)]),
        IndexModel([("purge_at", ASCENDING)], expireAfterSeconds=0),
    ],
    "servers": [IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)],
    "leases": [
        IndexModel([("expires", ASCENDING)], expireAfterSeconds=0),
        IndexModel([("scope", ASCENDING), ("expires", ASCENDING)]),
        IndexModel([("holder", ASCENDING)]),
    ],
}


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
        for name, indexes in INDEXES.items():
            await self.db[name].create_indexes(indexes)

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False

    async def close(self) -> None:
        await self.client.close()
