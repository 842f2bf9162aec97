"""codes: the one live login code per bare JID, stored only as a keyed hash.

A document per JID: `hash` (HMAC-SHA256 of the code keyed by the request id; null once the code
was used or withdrawn), `attempts` (wrong answers so far), `expires` (the code's end; TTL index),
`request_id`, `requested_at` (for the minimum interval between two requests for one JID),
`used_at` (set when the code was used to log in), `to` and `kind` (where and how it was sent).
The document leaves with its code (TTL): a void code answers 429 until then, and the interval is
kept exactly as long as `auth.code_interval` ≤ `auth.code_ttl` (the defaults: 30 s, 300 s). A used
code's document stays an hour (USED_KEPT), so the next request knows that it follows a login.

Within the interval a new code is made only (1) after the previous one was used: the user proved
control of the JID, so the next login (a client that logs in on every reconnect) is not held up;
or (2) for a `type=iq` request to the same full JID the live code was sent to (a web client that
reconnected before it could use it): the new code replaces the old one, which stops working, and
the wrong attempts made on the old one carry over, so replacing codes never buys more guesses.
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
USED_KEPT = 3600  # seconds a used code's document stays (the per-JID limit's window)


def new_code() -> str:
    return f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"


def code_hash(request_id: str, jid: str, code: str) -> str:
    return hmac.new(request_id.encode(), f"{jid}\n{code}".encode(), hashlib.sha256).hexdigest()


@dataclass
class IssuedCode:
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

    async def admission(self, jid: str, to: str, kind: str) -> tuple[int, bool]:
        """(seconds to wait before a new code may be made for `jid`, sent to `to` by `kind`, 0 for
        now; whether the previous code was used, so the request comes after a login)."""
        doc = await self.c.find_one({"_id": jid})
        if doc is None:
            return 0, False
        now = utcnow()
        if doc.get("hash") is None and doc.get("used_at") is not None:
            return 0, True
        live = doc.get("hash") is not None and doc.get("attempts", 0) < MAX_ATTEMPTS and doc["expires"] > now
        if live and kind == "iq" and doc.get("kind") == "iq" and doc.get("to") == to:
            return 0, False
        return self._wait(doc.get("requested_at"), now), False

    async def issue(self, jid: str, to: str | None = None, kind: str = "message", after_use: bool = False) -> IssuedCode | int:
        """A new code for `jid` (sent to `to` by `kind`), replacing any previous one; or, when the
        last request is less than `interval` seconds old, the seconds left to wait (decided
        atomically). With `after_use`, only a used previous code is replaced: 0 if there is none
        (the caller then counts the request as an ordinary one and asks again)."""
        now = utcnow()
        code, request_id = new_code(), str(uuid.uuid4())
        expires = now + dt.timedelta(seconds=self.ttl)
        fresh = {
            "hash": code_hash(request_id, jid, code),
            "expires": expires,
            "request_id": request_id,
            "to": to or jid,
            "kind": kind,
        }
        fields = {**fresh, "attempts": 0, "requested_at": now}
        issued = IssuedCode(code, request_id, expires)
        used = {"_id": jid, "hash": None, "used_at": {"$ne": None}}
        if after_use:
            result = await self.c.update_one(used, {"$set": fields, "$unset": {"used_at": ""}})
            return issued if result.matched_count == 1 else 0
        # Replace an old enough request, else insert the first one. (No upsert: two first requests
        # racing in one upsert are not reliably serialised by every MongoDB-compatible server.)
        old_enough = {"_id": jid, "requested_at": {"$lte": now - dt.timedelta(seconds=self.interval)}}
        for _ in range(2):
            for query in (old_enough, used):
                if (await self.c.update_one(query, {"$set": fields, "$unset": {"used_at": ""}})).matched_count == 1:
                    return issued
            if kind == "iq" and to:
                # the same full JID asks again while its code is live: a new code, attempts kept
                same_client = {
                    "_id": jid,
                    "to": to,
                    "kind": "iq",
                    "hash": {"$ne": None},
                    "attempts": {"$lt": MAX_ATTEMPTS},
                    "expires": {"$gt": now},
                }
                if (await self.c.update_one(same_client, {"$set": fresh})).matched_count == 1:
                    return issued
            try:
                await self.c.insert_one({"_id": jid, **fields})
                return issued
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
            # The document of a used code stays for USED_KEPT: the next request knows it follows a login.
            kept = max(doc["expires"], now + dt.timedelta(seconds=USED_KEPT))
            result = await self.c.update_one(
                {**guard, "expires": {"$gt": now}}, {"$set": {"hash": None, "used_at": now, "expires": kept}}
            )
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
