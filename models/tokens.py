"""tokens: bearer tokens, stored only as the SHA-256 of the token."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection

from models.db import utcnow

TOUCH_INTERVAL = dt.timedelta(seconds=60)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class IssuedToken:
    token: str
    token_id: str
    expires: dt.datetime


@dataclass
class TokenInfo:
    token_id: str
    owner: str


class Tokens:
    def __init__(self, collection: AsyncCollection, ttl: int) -> None:
        self.c = collection
        self.ttl = ttl

    async def issue(self, owner: str, device: str | None = None, client: str | None = None) -> IssuedToken:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        doc = {
            "_id": secrets.token_urlsafe(12),
            "hash": token_hash(token),
            "owner": owner,
            "device": device,
            "client": client,
            "created_at": now,
            "expires": now + dt.timedelta(seconds=self.ttl),
            "last_used_at": None,
        }
        await self.c.insert_one(doc)
        return IssuedToken(token, doc["_id"], doc["expires"])

    async def verify(self, token: str) -> TokenInfo | None:
        """The token's owner if it exists and has not expired; keeps last_used_at per minute."""
        now = utcnow()
        # no projection: a token document is eight small fields (see Users.quota)
        doc = await self.c.find_one({"hash": token_hash(token)})
        if doc is None or doc["expires"] <= now:
            return None
        last = doc.get("last_used_at")
        if last is None or now - last >= TOUCH_INTERVAL:
            await self.c.update_one({"_id": doc["_id"]}, {"$set": {"last_used_at": now}})
        return TokenInfo(doc["_id"], doc["owner"])

    async def list(self, owner: str) -> list[dict]:
        now = utcnow()
        cursor = self.c.find({"owner": owner, "expires": {"$gt": now}}, {"hash": 0}).sort("created_at", 1)
        return await cursor.to_list()

    async def revoke(self, owner: str, token_id: str) -> bool:
        result = await self.c.delete_one({"_id": token_id, "owner": owner})
        return result.deleted_count == 1

    async def revoke_all_but(self, owner: str, keep_id: str) -> int:
        result = await self.c.delete_many({"owner": owner, "_id": {"$ne": keep_id}})
        return result.deleted_count

    async def revoke_all(self, owner: str) -> None:
        await self.c.delete_many({"owner": owner})
