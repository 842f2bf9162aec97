"""files: one owner's link to stored content. Every query here is scoped to an owner.

Beside the `files` collection, `file_counts` keeps each owner's count and bytes per bucket
(images, videos, voices, files, avatars), moved with an atomic $inc by every insert and delete
made here and recomputed by fsck (`recount`), so unfiltered stats and list totals are one point
read instead of a pass over the owner's files.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from models.criteria import SORT_FIELDS, Criteria, Page
from models.db import utcnow

log = logging.getLogger("gallery.files")

DIGEST_FIELDS = {32: "md5", 40: "sha1", 64: "sha256"}  # hex length -> field

BUCKET_NAMES = ("images", "videos", "voices", "files", "avatars")
_BUCKET_PREFIXES = (("image/", "images"), ("video/", "videos"), ("audio/", "voices"))
# Newest-first pages are read through a window on created_at that grows until it holds the page:
# the first spans this long, each next one up to 64 times longer, at most this many, never before
# WINDOW_FLOOR; past that, one plain sorted query.
FIRST_WINDOW = dt.timedelta(days=1)
MAX_WINDOWS = 5
WINDOW_FLOOR = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def bucket_of(media_type: str, is_avatar: bool) -> str:
    """The stats bucket a file counts in."""
    if is_avatar:
        return "avatars"
    return next((name for prefix, name in _BUCKET_PREFIXES if media_type.startswith(prefix)), "files")


def _zero_counts() -> dict[str, dict[str, int]]:
    return {name: {"count": 0, "used": 0} for name in BUCKET_NAMES}


def _object_ids(ids: list[str]) -> list[ObjectId]:
    result = []
    for value in ids:
        try:
            result.append(ObjectId(value))
        except (InvalidId, TypeError):
            continue  # a malformed id names none of the caller's files
    return result


def query(owner: str, criteria: Criteria, is_avatar: bool | None) -> dict:
    """The Mongo filter for `criteria` among `owner`'s files (avatars, other files, or both)."""
    q: dict = {"owner": owner}
    if is_avatar is not None:
        q["is_avatar"] = is_avatar
    if criteria.ids is not None:
        q["_id"] = {"$in": _object_ids(criteria.ids)}
    if criteria.slot_id is not None:
        q["slot_id"] = criteria.slot_id
    if criteria.media_type:
        if "/" in criteria.media_type:
            q["media_type"] = criteria.media_type
        else:
            q["media_type"] = {"$regex": "^" + re.escape(criteria.media_type) + "/"}
    if criteria.context is not None:
        q["context"] = criteria.context
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
        await self.c.insert_one(doc)
        await self._count(doc["owner"], bucket_of(doc["media_type"], bool(doc.get("is_avatar"))), 1, doc["size"])

    async def by_slot(self, slot_id: str) -> dict | None:
        return await self.c.find_one({"slot_id": slot_id})

    async def with_content(self, owner: str, size: int, digest: str) -> dict | None:
        """One of `owner`'s files with this content (md5, sha1 or sha256 hex), if any (for slot
        dedup). The query names exactly the (owner, digest) index and the size is compared here:
        with `size` in the query a database without index intersection reads every file of the
        owner."""
        doc = await self.c.find_one({"owner": owner, DIGEST_FIELDS[len(digest)]: digest})
        return doc if doc is not None and doc["size"] == size else None

    async def page(self, owner: str, criteria: Criteria, page: Page, is_avatar: bool) -> tuple[int, list[dict]]:
        q = query(owner, criteria, is_avatar)
        if criteria.empty:  # unfiltered: the total is the owner's counter
            counts = await self.counts(owner)
            names = ("avatars",) if is_avatar else BUCKET_NAMES[:4]
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

    async def matching(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> list[dict]:
        """What a delete would remove: just the fields the delete needs."""
        projection = {"sha256": 1, "size": 1, "owner": 1}
        return await self.c.find(query(owner, criteria, is_avatar), projection).to_list()

    async def delete(self, owner: str, file_id: ObjectId) -> bool:
        # find + delete rather than find_one_and_delete: SecantusDB runs findAndModify as a scan
        # of the whole collection. Of two concurrent deletes only one deletes, and only it counts.
        q = {"_id": file_id, "owner": owner}
        doc = await self.c.find_one(q, {"size": 1, "media_type": 1, "is_avatar": 1})
        if doc is None or (await self.c.delete_one(q)).deleted_count != 1:
            return False
        await self._count(owner, bucket_of(doc.get("media_type") or "", bool(doc.get("is_avatar"))), -1, -doc["size"])
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
            {"$group": {"_id": {"o": "$owner", "a": "$is_avatar", "t": "$media_type"}, "n": {"$sum": 1}, "b": {"$sum": "$size"}}}
        ]
        if owner is not None:
            pipeline.insert(0, {"$match": {"owner": owner}})
        actual: dict[str, dict[str, dict[str, int]]] = {}
        async for row in await self.c.aggregate(pipeline):
            key = row["_id"]
            bucket = actual.setdefault(key["o"], _zero_counts())[bucket_of(key.get("t") or "", bool(key.get("a")))]
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
        """Count and bytes per (is_avatar, media_type) among `owner`'s files."""
        pipeline = [
            {"$match": query(owner, criteria, None)},
            {
                "$group": {
                    "_id": {"a": "$is_avatar", "t": "$media_type"},
                    "count": {"$sum": 1},
                    "used": {"$sum": "$size"},
                }
            },
        ]
        cursor = await self.c.aggregate(pipeline)
        return [
            {"is_avatar": bool(d["_id"].get("a")), "media_type": d["_id"].get("t") or "", "count": d["count"], "used": d["used"]}
            async for d in cursor
        ]

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
