"""files: one owner's link to stored content. Every query here is scoped to an owner."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

SORT_FIELDS = {"id": "_id", "created_at": "created_at", "size": "size", "name": "name", "media_type": "media_type"}


@dataclass
class Criteria:
    """What a list, stats or delete request selects among one owner's files."""

    ids: list[str] | None = None
    slot_id: str | None = None
    media_type: str | None = None
    context: str | None = None
    date_gte: dt.datetime | None = None
    date_lte: dt.datetime | None = None
    size_gte: int | None = None
    size_lte: int | None = None


@dataclass
class Page:
    number: int = 1
    per_page: int = 50
    order: list[tuple[str, int]] = field(default_factory=lambda: [("created_at", -1)])


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

    async def insert(self, doc: dict) -> None:
        await self.c.insert_one(doc)

    async def by_slot(self, slot_id: str) -> dict | None:
        return await self.c.find_one({"slot_id": slot_id})

    async def owned(self, owner: str, file_id: str, is_avatar: bool | None = None) -> dict | None:
        ids = _object_ids([file_id])
        if not ids:
            return None
        q: dict = {"_id": ids[0], "owner": owner}
        if is_avatar is not None:
            q["is_avatar"] = is_avatar
        return await self.c.find_one(q)

    async def with_content(self, owner: str, size: int, *, sha256: str | None = None, md5: str | None = None) -> dict | None:
        """One of `owner`'s files with this content, if any (for slot dedup)."""
        q: dict = {"owner": owner, "size": size}
        if sha256:
            q["sha256"] = sha256
        else:
            q["md5"] = md5
        return await self.c.find_one(q)

    async def page(self, owner: str, criteria: Criteria, page: Page, is_avatar: bool) -> tuple[int, list[dict]]:
        q = query(owner, criteria, is_avatar)
        total = await self.c.count_documents(q)
        sort = [(SORT_FIELDS[name], ASCENDING if direction > 0 else DESCENDING) for name, direction in page.order]
        if not any(key == "_id" for key, _ in sort):
            sort.append(("_id", sort[-1][1] if sort else DESCENDING))
        skip = (page.number - 1) * page.per_page
        if skip >= total:
            return total, []
        cursor = self.c.find(q).sort(sort).skip(skip).limit(page.per_page)
        return total, await cursor.to_list()

    async def matching(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> list[dict]:
        """What a delete would remove: just the fields the delete needs."""
        projection = {"sha256": 1, "size": 1, "owner": 1}
        return await self.c.find(query(owner, criteria, is_avatar), projection).to_list()

    async def delete(self, owner: str, file_id: ObjectId) -> bool:
        result = await self.c.delete_one({"_id": file_id, "owner": owner})
        return result.deleted_count == 1

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
