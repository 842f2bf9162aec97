"""codes: the one live login code per bare JID, stored only as a keyed hash.

A document per JID: `hash` (HMAC-SHA256 of the code keyed by the request id; null once the code
was used or withdrawn), `attempts` (wrong answers so far), `expires` (the code's end; TTL index),
`request_id`, `requested_at` (for the minimum interval between two requests for one JID).
The document leaves with its code (TTL): a void code answers 429 until then, and the interval is
kept exactly as long as `auth.code_interval` ≤ `auth.code_ttl` (the defaults: 30 s, 300 s).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import math
import secrets
import uuid
from dataclasses import dataclass

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from models.db import utcnow

MAX_ATTEMPTS = 5
DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"


def code_hash(request_id: str, jid: str, code: str) -> str:
    return hmac.new(request_id.encode(), f"{jid}\n{code}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Issued:
    code: str
    request_id: str
    expires: dt.datetime


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # right code: now consumed
    WRONG = "wrong"  # wrong code, attempts left
    VOID = "void"  # too many wrong attempts: the code is void until a new one is requested
    EXPIRED = "expired"
    MISSING = "missing"  # no code, or it was already used


@dataclass
class Verdict:
    outcome: Outcome
    attempts_left: int = 0
    retry_after: int = 0  # for VOID: seconds until a new code may be requested


class Codes:
    def __init__(self, collection: AsyncCollection, ttl: int, interval: int) -> None:
        self.c = collection
        self.ttl = ttl
        self.interval = interval

    def _wait(self, requested_at: dt.datetime | None, now: dt.datetime) -> int:
        if requested_at is None:
            return 0
        left = (requested_at + dt.timedelta(seconds=self.interval) - now).total_seconds()
        return max(0, math.ceil(left))

    async def wait_time(self, jid: str) -> int:
        """Seconds before a new code may be requested for `jid` (0: now)."""
        doc = await self.c.find_one({"_id": jid}, {"requested_at": 1})
        return self._wait(doc and doc.get("requested_at"), utcnow())

    async def issue(self, jid: str) -> Issued | int:
        """A new code for `jid`, replacing any previous one; or, when the last request is less than
        `interval` seconds old, the seconds left to wait (decided atomically)."""
        now = utcnow()
        code, request_id = new_code(), str(uuid.uuid4())
        expires = now + dt.timedelta(seconds=self.ttl)
        fields = {
            "hash": code_hash(request_id, jid, code),
            "attempts": 0,
            "expires": expires,
            "request_id": request_id,
            "requested_at": now,
        }
        # Replace an old enough request, else insert the first one. (No upsert: two first requests
        # racing in one upsert are not reliably serialised by every MongoDB-compatible server.)
        old_enough = {"_id": jid, "requested_at": {"$lte": now - dt.timedelta(seconds=self.interval)}}
        for _ in range(2):
            if (await self.c.update_one(old_enough, {"$set": fields})).matched_count == 1:
                return Issued(code, request_id, expires)
            try:
                await self.c.insert_one({"_id": jid, **fields})
                return Issued(code, request_id, expires)
            except DuplicateKeyError:
                pass  # a request exists: too recent, or it was just replaced by another one
        return max(1, await self.wait_time(jid))

    async def withdraw(self, jid: str, request_id: str) -> None:
        """Forget a code that could not be delivered (and so its request: the JID may retry)."""
        await self.c.delete_one({"_id": jid, "request_id": request_id})

    async def void(self, jid: str, request_id: str) -> None:
        """The user refused the request: the code stops working."""
        await self.c.update_one({"_id": jid, "request_id": request_id}, {"$set": {"hash": None}})

    async def delete(self, jid: str) -> None:
        await self.c.delete_one({"_id": jid})

    async def check(self, jid: str, code: str) -> Verdict:
        """Try `code` for `jid`: a right code is consumed; a wrong one counts an attempt, and the
        MAX_ATTEMPTS-th wrong one voids the code. Every step is guarded, so concurrent attempts
        can neither use a code twice nor exceed the attempt limit."""
        now = utcnow()
        doc = await self.c.find_one({"_id": jid})
        verdict = self._state(doc, now)
        if verdict is not None:
            return verdict
        assert doc is not None
        guard = {"_id": jid, "request_id": doc["request_id"], "hash": {"$ne": None}, "attempts": {"$lt": MAX_ATTEMPTS}}
        if hmac.compare_digest(doc["hash"], code_hash(doc["request_id"], jid, code)):
            result = await self.c.update_one({**guard, "expires": {"$gt": now}}, {"$set": {"hash": None, "used_at": now}})
            if result.modified_count == 1:
                return Verdict(Outcome.ACCEPTED)
        else:
            after = await self.c.find_one_and_update(
                guard, {"$inc": {"attempts": 1}}, return_document=ReturnDocument.AFTER, projection={"attempts": 1}
            )
            if after is not None:
                if after["attempts"] >= MAX_ATTEMPTS:
                    return Verdict(Outcome.VOID, retry_after=max(1, self._wait(doc.get("requested_at"), now)))
                return Verdict(Outcome.WRONG, attempts_left=MAX_ATTEMPTS - after["attempts"])
        # Another request changed the code in between: judge by what is there now.
        return self._state(await self.c.find_one({"_id": jid}), utcnow()) or Verdict(Outcome.MISSING)

    def _state(self, doc: dict | None, now: dt.datetime) -> Verdict | None:
        """The verdict when the code cannot be tried at all; None when it can."""
        if doc is None or doc.get("hash") is None:
            return Verdict(Outcome.MISSING)
        if doc.get("attempts", 0) >= MAX_ATTEMPTS:
            return Verdict(Outcome.VOID, retry_after=max(1, self._wait(doc.get("requested_at"), now)))
        if doc["expires"] <= now:
            return Verdict(Outcome.EXPIRED)
        return None
