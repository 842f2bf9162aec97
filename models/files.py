"""files: one owner's link to stored content. Every query here is scoped to an owner.

Beside the `files` collection, `file_counts` keeps each owner's count and bytes per bucket
(images, videos, voices, files, avatars), moved with an atomic $inc by every insert and delete
made here and recomputed by fsck (`recount`), so unfiltered stats and list totals are one point
read instead of a pass over the owner's files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from models.criteria import SORT_FIELDS, Criteria, Page
from models.db import utcnow
from models.sequences import IdSequence

log = logging.getLogger("gallery.files")

MIGRATING = "migrating:"  # the provisional slot_id of a file being given an integer id
DIGEST_FIELDS = {32: "md5", 40: "sha1", 64: "sha256"}  # hex length -> field

# The kinds a file is of (the API's `type` filter) and the stats bucket of each; avatars count in
# their own bucket whatever their kind.
KINDS = {"image": "images", "video": "videos", "audio": "audio", "voice": "voices", "file": "files"}
BUCKET_NAMES = (*KINDS.values(), "avatars")
_PREFIXES = (("image/", "image"), ("video/", "video"), ("audio/", "audio"))
# Newest-first pages are read through a window on created_at that grows until it holds the page:
# the first spans this long, each next one up to 64 times longer, at most this many, never before
# WINDOW_FLOOR; past that, one plain sorted query.
FIRST_WINDOW = dt.timedelta(days=1)
MAX_WINDOWS = 5
WINDOW_FLOOR = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def kind_of(media_type: str, context: str | None) -> str:
    """A file's kind: a voice message by its context, else by its media type's top level."""
    if context == "voice":
        return "voice"
    return next((kind for prefix, kind in _PREFIXES if media_type.startswith(prefix)), "file")


def bucket_of(doc: dict) -> str:
    """The stats bucket a file counts in."""
    if doc.get("is_avatar"):
        return "avatars"
    return KINDS[doc.get("kind") or kind_of(doc.get("media_type") or "", doc.get("context"))]


class SlotTaken(Exception):
    """A file with this slot_id exists already."""


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _zero_counts() -> dict[str, dict[str, int]]:
    return {name: {"count": 0, "used": 0} for name in BUCKET_NAMES}


def file_ids(ids: list) -> list[int]:
    """The integer ids among what a client sent (integers or decimal strings); anything else
    names none of the caller's files."""
    result = []
    for value in ids:
        text = str(value).strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            result.append(int(text))
    return result


def query(owner: str, criteria: Criteria, is_avatar: bool | None) -> dict:
    """The Mongo filter for `criteria` among `owner`'s files (avatars, other files, or both)."""
    q: dict = {"owner": owner}
    if criteria.contexts is not None:
        named = set(criteria.contexts)
        q["context"] = {"$in": sorted(named) + ([None] if "file" in named else [])}  # no context: a file
        if "avatar" in named and is_avatar is False:
            is_avatar = None  # naming avatars brings them into the selection
    if is_avatar is not None:
        q["is_avatar"] = is_avatar
    if criteria.types is not None:
        q["kind"] = {"$in": sorted(set(criteria.types))}
    if criteria.ids is not None:
        q["_id"] = {"$in": file_ids(criteria.ids)}
    if criteria.slot_id is not None:
        q["slot_id"] = criteria.slot_id
    if criteria.media_type:
        if "/" in criteria.media_type:
            q["media_type"] = criteria.media_type
        else:
            q["media_type"] = {"$regex": "^" + re.escape(criteria.media_type) + "/"}
    for name, key, op in (
        ("date_gte", "created_at", "$gte"),
        ("date_lte", "created_at", "$lte"),
        ("size_gte", "size", "$gte"),
        ("size_lte", "size", "$lte"),
    ):
        value = getattr(criteria, name)
        if value is not None:
            q.setdefault(key, {})[op] = value
    return q


class Files:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection
        self.counters: AsyncCollection = collection.database["file_counts"]

    async def insert(self, doc: dict) -> None:
        try:
            await self.c.insert_one(doc)
        except DuplicateKeyError as exc:
            if "slot_id" in str(exc):
                raise SlotTaken(doc["slot_id"]) from None
            raise
        await self._count(doc["owner"], bucket_of(doc), 1, doc["size"])

    async def migrate(self, ids: IdSequence) -> int:
        """Bring files written before integer ids over, once (start-up and fsck run it): each gets
        an id from the sequence, its kind, and `context: "avatar"` if it is an avatar. Crash-safe:
        the copy is inserted under a provisional slot_id that names the original, the original
        removed, the slot_id restored; a run that finds a provisional copy finishes its steps.
        Returns how many files were brought over (their owners' counters are then recounted)."""
        moved = 0
        async for old in self.c.find({"_id": {"$type": "objectId"}}):
            doc = {**old, "_id": await ids.next(), "slot_id": MIGRATING + str(old["_id"]), "slot": old["slot_id"]}
            if doc.get("is_avatar"):
                doc["context"] = "avatar"
            doc["kind"] = kind_of(doc.get("media_type") or "", doc.get("context"))
            with contextlib.suppress(DuplicateKeyError):  # an interrupted run made its copy already
                await self.c.insert_one(doc)
        async for copy in self.c.find({"slot_id": {"$regex": "^" + re.escape(MIGRATING)}}):
            await self.c.delete_one({"_id": ObjectId(copy["slot_id"].removeprefix(MIGRATING))})
            await self.c.update_one({"_id": copy["_id"]}, {"$set": {"slot_id": copy["slot"]}, "$unset": {"slot": ""}})
            moved += 1
        if moved:
            await self.recount()
        return moved

    async def by_slot(self, slot_id: str, now: dt.datetime | None = None) -> dict | None:
        """The file behind a download link, unless it has expired (its links answer 404 from
        `expires_at` on, before the sweeper has removed it)."""
        doc = await self.c.find_one({"slot_id": slot_id})
        if doc is None:
            return None
        expires_at = doc.get("expires_at")
        if expires_at is not None and _aware(expires_at) <= (now or utcnow()):
            return None
        return doc

    async def slot_taken(self, slot_id: str) -> bool:
        """Whether a file (expired or not) has this slot_id."""
        return await self.c.find_one({"slot_id": slot_id}, {"_id": 1}) is not None

    async def expired(self, now: dt.datetime, limit: int) -> list[dict]:
        """Up to `limit` files whose `expires_at` has come, the longest expired first, with the
        fields a delete needs (the sweeper). It rides the `expires_at` index: files that never
        expire hold null there, which `$lte` never matches."""
        cursor = self.c.find({"expires_at": {"$lte": now}}, {"owner": 1, "sha256": 1, "size": 1, "expires_at": 1})
        return await cursor.sort("expires_at", ASCENDING).limit(limit).to_list()

    async def expiring(self, owner: str, after: dt.datetime, limit: int) -> list[dict]:
        """`owner`'s files that expire after `after`, soonest first: `expires_at` and `size`."""
        cursor = self.c.find({"owner": owner, "expires_at": {"$gt": after}}, {"expires_at": 1, "size": 1})
        return await cursor.sort("expires_at", ASCENDING).limit(limit).to_list()

    async def with_content(self, owner: str, size: int, digest: str) -> dict | None:
        """One of `owner`'s files with this content (md5, sha1 or sha256 hex), if any (for slot
        dedup). The query names exactly the (owner, digest) index and the size is compared here:
        with `size` in the query a database without index intersection reads every file of the
        owner."""
        doc = await self.c.find_one({"owner": owner, DIGEST_FIELDS[len(digest)]: digest})
        return doc if doc is not None and doc["size"] == size else None

    async def page(self, owner: str, criteria: Criteria, page: Page, is_avatar: bool | None) -> tuple[int, list[dict]]:
        q = query(owner, criteria, is_avatar)
        if criteria.empty:  # unfiltered: the total is the owner's counter
            counts = await self.counts(owner)
            names = ("avatars",) if is_avatar else tuple(KINDS.values())
            total = sum(counts[name]["count"] for name in names)
        else:
            total = await self.c.count_documents(q)
        sort = [(SORT_FIELDS[name], ASCENDING if direction > 0 else DESCENDING) for name, direction in page.order]
        if not any(key == "_id" for key, _ in sort):
            sort.append(("_id", sort[-1][1] if sort else DESCENDING))
        skip = page.skip
        if skip >= total:
            return total, []
        if page.newest_first and criteria.dates_only:
            return total, await self._newest_first(q, sort, skip, min(skip + page.per_page, total))
        cursor = self.c.find(q).sort(sort).skip(skip).limit(page.per_page)
        return total, await cursor.to_list()

    async def _newest_first(self, q: dict, sort: list[tuple[str, int]], skip: int, need: int) -> list[dict]:
        """The newest `need` files matching `q`, from the `skip`-th on, read through a window
        [lower, now] on created_at that grows until it holds `need` files: every file outside it
        is older than every file inside, so its newest `need` are the answer. The window rides
        the (owner, is_avatar, created_at) index, so page 1 reads about a page of documents even
        where the database sorts in memory and applies `limit` after reading every match
        (SecantusDB); on MongoDB it is the same index scan a plain sort + limit makes."""
        bounds = dict(q.get("created_at") or {})
        floor = max(bounds.get("$gte") or WINDOW_FLOOR, WINDOW_FLOOR)
        newest = bounds.get("$lte") or utcnow()
        span = FIRST_WINDOW
        for _ in range(MAX_WINDOWS):
            lower = newest - span
            if lower <= floor:
                break
            window = {**q, "created_at": {**bounds, "$gte": lower}}
            docs = await self.c.find(window).sort(sort).limit(need).to_list()
            if len(docs) >= need:
                return docs[skip:]
            span *= min(64, max(4, 2 * need // max(len(docs), 1)))  # aim past `need` by about 2x
        return await self.c.find(q).sort(sort).skip(skip).limit(need - skip).to_list()

    async def oldest_reaching(self, owner: str, criteria: Criteria, is_avatar: bool | None, target: int) -> list[int]:
        """The ids of `owner`'s oldest matching files whose sizes together first reach `target`
        bytes (all of them when they never do), read oldest first, id and size only."""
        chosen: list[int] = []
        total = 0
        if target <= 0:
            return chosen
        cursor = self.c.find(query(owner, criteria, is_avatar), {"size": 1}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        async for doc in cursor:
            chosen.append(doc["_id"])
            total += doc["size"]
            if total >= target:
                break
        await cursor.close()
        return chosen

    async def matching(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> list[dict]:
        """What a delete would remove: just the fields the delete needs."""
        projection = {"sha256": 1, "size": 1, "owner": 1}
        return await self.c.find(query(owner, criteria, is_avatar), projection).to_list()

    async def delete(self, owner: str, file_id: int) -> bool:
        # find + delete rather than find_one_and_delete: SecantusDB runs findAndModify as a scan
        # of the whole collection. Of two concurrent deletes only one deletes, and only it counts.
        q = {"_id": file_id, "owner": owner}
        doc = await self.c.find_one(q, {"size": 1, "media_type": 1, "is_avatar": 1, "kind": 1, "context": 1})
        if doc is None or (await self.c.delete_one(q)).deleted_count != 1:
            return False
        await self._count(owner, bucket_of(doc), -1, -doc["size"])
        return True

    # -- per-owner counters ---------------------------------------------------------------
    async def _count(self, owner: str, bucket: str, count: int, size: int) -> None:
        """Move one owner's counters. The file change it follows has happened, so a failure here
        is logged, not raised: the counters are then off until fsck recomputes them."""
        try:
            await self.counters.update_one(
                {"_id": owner}, {"$inc": {f"{bucket}.count": count, f"{bucket}.used": size}}, upsert=True
            )
        except PyMongoError as exc:
            log.warning("file counters of %s not updated (fsck recomputes them): %s", owner, exc)

    async def counts(self, owner: str) -> dict[str, dict[str, int]]:
        """{bucket: {"count", "used"}} for one owner, from the counters (one point read)."""
        doc = await self.counters.find_one({"_id": owner}) or {}
        counts = _zero_counts()
        for name, value in counts.items():
            stored = doc.get(name) or {}
            value["count"], value["used"] = int(stored.get("count", 0)), int(stored.get("used", 0))
        return counts

    async def recount(self, owner: str | None = None) -> int:
        """fsck: recompute the counters from `files` (of one owner, or of all); returns how many
        owners' counters were wrong."""
        pipeline: list[dict] = [
            {
                "$group": {
                    "_id": {"o": "$owner", "is_avatar": "$is_avatar", "kind": "$kind"},
                    "n": {"$sum": 1},
                    "b": {"$sum": "$size"},
                }
            }
        ]
        if owner is not None:
            pipeline.insert(0, {"$match": {"owner": owner}})
        actual: dict[str, dict[str, dict[str, int]]] = {}
        async for row in await self.c.aggregate(pipeline):
            key = row["_id"]
            bucket = actual.setdefault(key["o"], _zero_counts())[bucket_of(key)]
            bucket["count"] += row["n"]
            bucket["used"] += row["b"]
        stored = [doc["_id"] async for doc in self.counters.find({} if owner is None else {"_id": owner}, {"_id": 1})]
        fixed = 0
        for name in actual.keys() | set(stored):
            want = actual.get(name, _zero_counts())
            if await self.counts(name) != want:
                await self.counters.replace_one({"_id": name}, want, upsert=True)
                fixed += 1
        return fixed

    async def usage(self, owner: str, criteria: Criteria) -> list[dict]:
        """Count and bytes per stats bucket among `owner`'s files that match."""
        is_avatar = None if criteria.contexts is None or "avatar" in criteria.contexts else False
        pipeline = [
            {"$match": query(owner, criteria, is_avatar)},
            {"$group": {"_id": {"is_avatar": "$is_avatar", "kind": "$kind"}, "count": {"$sum": 1}, "used": {"$sum": "$size"}}},
        ]
        counts = _zero_counts()
        async for row in await self.c.aggregate(pipeline):
            bucket = counts[bucket_of(row["_id"])]
            bucket["count"] += row["count"]
            bucket["used"] += row["used"]
        return counts

    async def lacking_sha1(self) -> list[str]:
        """fsck: the contents some file of which has no sha1 (stored by an earlier version)."""
        cursor = await self.c.aggregate([{"$match": {"sha1": {"$exists": False}}}, {"$group": {"_id": "$sha256"}}])
        return [d["_id"] async for d in cursor]

    async def set_sha1(self, sha256: str, sha1: str) -> None:
        await self.c.update_many({"sha256": sha256, "sha1": {"$exists": False}}, {"$set": {"sha1": sha1}})

    async def totals_by_owner(self) -> dict[str, int]:
        """fsck: the sum of sizes per owner."""
        cursor = await self.c.aggregate([{"$group": {"_id": "$owner", "used": {"$sum": "$size"}}}])
        return {d["_id"]: d["used"] async for d in cursor}

    async def refs_by_blob(self) -> dict[str, int]:
        """fsck: how many files point at each blob."""
        cursor = await self.c.aggregate([{"$group": {"_id": "$sha256", "n": {"$sum": 1}}}])
        return {d["_id"]: d["n"] async for d in cursor}

    async def blob_docs(self, sha256: str) -> list[dict]:
        return await self.c.find({"sha256": sha256}, {"md5": 1, "size": 1, "media_type": 1}).limit(1).to_list()
