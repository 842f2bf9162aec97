"""files: one owner's link to stored content. Every query here is scoped to an owner.

Beside the `files` collection, `file_counts` keeps each owner's count and bytes per bucket and
per cell (kind, avatar, media type, context), for the whole account, per month and
per day (models/counters.py), moved by one bulk $inc command with every insert and delete made
here and recomputed by fsck (`recount`). Stats with those filters and any date range, and every
newest- or oldest-first page, then read a bounded number of counter documents and at most about a
page plus two hours of files, however many files the owner has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import replace

import bson
import bson.errors
from bson import DBRef, ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from models import counters as cn
from models.counters import BUCKET_NAMES, KINDS, Segment, kind_of
from models.criteria import SORT_FIELDS, Criteria, Page
from models.db import utcnow
from models.groups import Groups
from models.sequences import IdSequence

log = logging.getLogger("gallery.files")

MIGRATING = "migrating:"  # the provisional slot_id of a file being given an integer id
DIGEST_FIELDS = {32: "md5", 40: "sha1", 64: "sha256"}  # hex length -> field

# The kinds a file is of (the API's `type` filter, KINDS: the stats bucket of each) live in
# models/counters.py; avatars count in their own bucket whatever their kind.
MARKER = "#counters"  # in file_counts: the counters have the shape this version keeps (cells, spans)
COUNTER_VERSION = 3  # 3: the months in the account document, the month documents hold days only
ORDERS = {(("created_at", -1),): -1, (("created_at", 1),): 1}  # the orders the counters page
_COUNTED = {"owner": 1, "size": 1, "kind": 1, "is_avatar": 1, "media_type": 1, "context": 1, "created_at": 1}


def bucket_of(doc: dict) -> str:
    """The stats bucket a file counts in."""
    if doc.get("is_avatar"):
        return "avatars"
    return KINDS[doc.get("kind") or kind_of(doc.get("media_type") or "", doc.get("context"))]


class SlotTaken(Exception):
    """A file with this slot_id exists already."""


FIRST_DATE = dt.datetime.min.replace(tzinfo=dt.UTC)  # the lower end of a range of dates: after null


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


def _bounds(criteria: Criteria) -> tuple[dt.datetime, dt.datetime]:
    """The criteria's dates as a half-open range [a, b) at the database's millisecond precision
    (a bare date as an upper bound is already the day's last millisecond)."""
    a = max(criteria.date_gte or cn.EPOCH, cn.EPOCH)
    if criteria.date_lte is None:
        return a, cn.FAR
    lte = criteria.date_lte.astimezone(dt.UTC)
    b = lte.replace(microsecond=lte.microsecond // 1000 * 1000) + cn.MS
    return a, max(a, min(b, cn.FAR))


def _whole_months(t: dt.datetime, low: dt.datetime, high: dt.datetime) -> bool:
    """Is the month of `t` inside [low, high) whole?"""
    return cn.month_start(t) >= low and cn.next_month(t) <= high


def _whole_days(t: dt.datetime, low: dt.datetime, high: dt.datetime) -> bool:
    """Is the day of `t` inside [low, high) whole?"""
    start = cn.day_start(t)
    return start >= low and start + cn.DAY <= high


def _insert_error(doc: dict, error: dict) -> Exception:
    """The exception one document of an unordered insert_many failed with."""
    if error.get("code") == 11000:
        if "slot_id" in f"{error.get('errmsg', '')} {error.get('keyPattern', '')}":
            return SlotTaken(doc["slot_id"])
        return DuplicateKeyError(error.get("errmsg", "duplicate key"), 11000, error)
    return PyMongoError(error.get("errmsg", "insert failed"))


def _account_counts(doc: dict | None) -> dict[str, dict[str, int]]:
    """{bucket: {"count", "used"}} of an account counter document (None: no files)."""
    counts = _zero_counts()
    for name, value in counts.items():
        stored = (doc or {}).get(name) or {}
        value["count"], value["used"] = int(stored.get("count", 0)), int(stored.get("used", 0))
    return counts


def _share(counts: dict[str, dict[str, int]], percent: int) -> int:
    """`percent` % of the bytes in all of `counts`' buckets, rounded up."""
    used = sum(bucket["used"] for bucket in counts.values())
    return -(-used * percent // 100)


def _one_of(ids: list[str]) -> str | dict:
    """An `_id` condition for these ids: equality for one (a cheaper plan than `$in` on the
    embedded database; the same point read on MongoDB)."""
    return ids[0] if len(ids) == 1 else {"$in": ids}


def _counter_ids(owner: str) -> dict:
    """The filter of every counter document of `owner`, by _id alone: the account document
    `owner` and the month and day documents `owner/…` (the strings from "owner/" up to, not
    including, "owner0": "0" follows "/"; a bare JID holds no "/", so no other owner's)."""
    return {"$or": [{"_id": owner}, {"_id": {"$gte": f"{owner}/", "$lt": f"{owner}0"}}]}


# what BSON refuses to encode, before anything is sent: lone surrogates, NUL in a key, integers
# beyond 64 bits
UNENCODABLE = (bson.errors.InvalidDocument, UnicodeEncodeError, OverflowError)


def plain(value: object) -> object:
    """Stored client JSON as it was given: PyMongo decodes a sub-document holding "$ref" (text)
    and "$id" as a bson DBRef, which is no JSON."""
    if isinstance(value, DBRef):
        value = value.as_doc()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _newest_counters(owner: str, b: dt.datetime) -> list[str]:
    """The month and day counters of the newest three days before `b` (and before the next hour:
    nothing is newer): where a first newest-first page nearly always lies (a page of 50 for
    anyone who uploads 17 files a day; a day document more in that read costs far less than
    the read of it the page otherwise makes)."""
    t = min(cn.hour_start(b), cn.ceil_hour(utcnow())) - cn.MS
    days = (t, t - cn.DAY, t - 2 * cn.DAY)
    return [*{cn.month_id(owner, day) for day in days}, *(cn.day_id(owner, day) for day in days)]


def _likely_days(owner: str, month: Segment, share: float, direction: int) -> list[str]:
    """The day counters around where the month segment's `share` (0 to 1, from its newest end
    for direction -1, from its oldest for 1) would lie if its files were spread evenly over it
    (up to now): that day and its neighbours. Read with the month's own counters, they spare
    the read of the day a page position (or files/percent's cut) falls in whenever uploads are
    spread about evenly, for a few small documents more in that read when they are not."""
    end = max(month.start, min(month.end, utcnow()))  # the current month holds nothing newer than now
    at = min(max(share, 0.0), 1.0) * (end - month.start)
    day = cn.day_start(end - at if direction < 0 else month.start + at)
    return [cn.day_id(owner, d) for d in (day - cn.DAY, day, day + cn.DAY) if month.start <= d < month.end]


class Files:
    def __init__(self, collection: AsyncCollection) -> None:
        self.c = collection
        self.counters: AsyncCollection = collection.database["file_counts"]
        self._inserts: Groups[dict, None] = Groups(self._insert_group)

    async def insert(self, doc: dict) -> None:
        """Insert a file and move its counters; raises SlotTaken when a file has its slot_id.
        Group commit (models/groups.py): the inserts that arrive while a group is being written
        go together as the next, one unordered `insert_many` and one bulk counter command for all
        of them (one `insert_one` when alone), so concurrent uploads share two commands. Each
        file's insert succeeds or fails on its own; its counters move only if it was inserted;
        the call returns once both commands are answered (as one insert and one counter command
        would)."""
        await self._inserts.submit(doc)

    async def _insert_group(self, docs: list[dict]) -> list[BaseException | None]:
        failed: dict[int, BaseException] = {}
        try:
            if len(docs) == 1:
                await self.c.insert_one(docs[0])
            else:
                await self.c.insert_many(docs, ordered=False)
        except UNENCODABLE as exc:
            if len(docs) == 1:
                return [exc]
            # a document the driver cannot encode (metadata the handler let through) fails alone.
            # insert_many encodes and sends batch by batch (48 MB / 100 000 documents): the
            # batches before the one that failed to encode were inserted; counted now, not again
            sent = {d["_id"] async for d in self.c.find({"_id": {"$in": [doc["_id"] for doc in docs]}}, {"_id": 1})}
            await self._count_all([doc for doc in docs if doc["_id"] in sent], 1)
            results: list[BaseException | None] = []
            for doc in docs:
                if doc["_id"] in sent:
                    results.append(None)
                    continue
                try:
                    results += await self._insert_group([doc])
                except Exception as failure:  # this one's alone: the others' results stand
                    results.append(failure)
            return results
        except DuplicateKeyError as exc:  # insert_one
            failed[0] = SlotTaken(docs[0]["slot_id"]) if "slot_id" in str(exc) else exc
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors") or ():
                failed[error["index"]] = _insert_error(docs[error["index"]], error)
            if exc.details.get("writeConcernErrors"):  # whether any was kept durably is unknown
                failed = dict.fromkeys(range(len(docs)), exc)
        # any other failure: whether any was inserted is unknown (as for one insert_one), and
        # every request of the group raises it (models/groups.py)
        await self._count_all([doc for i, doc in enumerate(docs) if i not in failed], 1)
        return [failed.get(i) for i in range(len(docs))]

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
        if moved or await self.counters.find_one({"_id": MARKER, "v": COUNTER_VERSION}) is None:
            await self.recount()  # files moved, or counters kept by an earlier version
            await self.counters.replace_one({"_id": MARKER}, {"v": COUNTER_VERSION}, upsert=True)
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
        fields a delete needs (the sweeper). It rides the `expires_at` index, as a range of dates:
        files that never expire hold null there, which sorts before every date, so a range with
        only its upper end starts at the index's first entry (SecantusDB then reads and decodes
        every file that never expires, each sweep; a real MongoDB bounds `$lte` by type itself)."""
        cursor = self.c.find(
            {"expires_at": {"$gte": FIRST_DATE, "$lte": now}}, {"owner": 1, "sha256": 1, "size": 1, "expires_at": 1}
        )
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

    async def page(
        self, owner: str, criteria: Criteria, page: Page, is_avatar: bool | None, known: dict[str, dict | None] | None = None
    ) -> tuple[int, list[dict]]:
        """One page of `owner`'s matching files and their total. `known`: counter documents this
        request has read already (`oldest_reaching`'s), by _id, not read again."""
        direction = ORDERS.get(tuple(page.order))
        if direction is not None and cn.countable(criteria):
            return await self._counted_page(owner, criteria, page, is_avatar, direction, known)
        if criteria.ids is not None and Criteria(ids=criteria.ids) == criteria:
            return await self._ids_page(owner, criteria.ids, page, is_avatar)
        # Other orders and selections (ids, sizes, a full media type): the total by a count and
        # the page by a sorted read of every match.
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
        if page.skip >= total:
            return total, []
        cursor = self.c.find(q).sort(sort).skip(page.skip).limit(page.per_page)
        return total, await cursor.to_list()

    async def _ids_page(self, owner: str, ids: list, page: Page, is_avatar: bool | None) -> tuple[int, list[dict]]:
        """A page of the files named by id (files/percent/<n>/, `id=` lists): one `_id $in`
        point read of them all (as many as the request names), ordered and sliced here."""
        wanted = file_ids(ids)
        docs = await self.c.find({"_id": {"$in": wanted}}).to_list() if wanted else []
        docs = [d for d in docs if d.get("owner") == owner and (is_avatar is None or bool(d.get("is_avatar")) == is_avatar)]
        order = list(page.order)
        if not any(name == "id" for name, _ in order):
            order.append(("id", order[-1][1] if order else -1))
        for name, direction in reversed(order):  # stable sorts, least significant key first
            field_name = SORT_FIELDS[name]
            docs.sort(key=lambda d, f=field_name: (d.get(f) is not None, d.get(f)), reverse=direction < 0)
        return len(docs), docs[page.skip : page.skip + page.per_page]

    async def _counted_page(
        self,
        owner: str,
        criteria: Criteria,
        page: Page,
        is_avatar: bool | None,
        direction: int,
        known: dict[str, dict | None] | None = None,
    ) -> tuple[int, list[dict]]:
        """A newest- (-1) or oldest-first (1) page through the counters: the segments of the
        time line say how many files precede each; the page's first and last positions are cut
        down to hours (or the pieces of an hour at the range's ends), and one read of that
        created_at range, sorted, skipping what precedes the page within it, is the page."""
        a, b = _bounds(criteria)
        match = cn.cell_filter(criteria, is_avatar)
        known = {} if known is None else known
        # the first newest-first page (what every client opens) nearly always lies in the last
        # few days: their counters come with the account document, in the same read
        ahead = _newest_counters(owner, b) if direction < 0 and page.number == 1 else ()
        segments = await self._segments(owner, criteria, is_avatar, a, b, match, known, ahead)
        total = sum(s.n for s in segments)
        first = page.skip
        if first >= total:
            return total, []
        last = min(first + page.per_page, total) - 1
        while True:
            ordered = segments if direction > 0 else segments[::-1]
            ends, before, seen, spots = [], 0, 0, []
            for index, segment in enumerate(ordered):
                n = segment.n
                if seen <= first < seen + n:
                    ends.append(index)
                    before = seen
                    spots.append((segment, first - seen))
                if seen <= last < seen + n:
                    ends.append(index)
                    spots.append((segment, last - seen))
                    break
                seen += n
            coarse = {ordered[i].start for i in ends if ordered[i].level in "md"}
            if not coarse:
                break
            guesses = [
                i
                for segment, k in spots
                if segment.level == "m"
                for i in _likely_days(owner, segment, (k + 0.5) / segment.n, direction)
            ]
            segments = await self._finer(owner, segments, coarse, match, known, guesses)
        if not ends:  # counters that disagree with themselves (until fsck): nothing to show there
            return total, []
        chosen = ordered[ends[0] : ends[-1] + 1]
        low, high = min(s.start for s in chosen), max(s.end for s in chosen)
        docs = await self._in_range(owner, criteria, is_avatar, low, high, match=match)
        docs.sort(key=lambda d: (d["created_at"], d["_id"]), reverse=direction < 0)
        return total, docs[first - before : last - before + 1]

    async def _finer(
        self,
        owner: str,
        segments: list[Segment],
        starts: set,
        match: cn.Match,
        known: dict[str, dict | None],
        ahead: Iterable[str] = (),
    ) -> list[Segment]:
        """The segments with the months and days that start at `starts` cut into days and hours:
        one read of those months' day counts or of those days' hour counts (by _id), unless
        they are among the counter documents `known` already (None: read, and not there). The
        counter documents `ahead` (the days a position likely falls in) come with that read
        when there is one."""
        chosen = [s for s in segments if s.start in starts and s.level in "md"]
        cut = {id(s) for s in chosen}
        ids = [(cn.month_id if s.level == "m" else cn.day_id)(owner, s.start) for s in chosen]
        if missing := [i for i in ids if i not in known]:
            missing += sorted({i for i in ahead if i not in known} - set(missing))
            found = {d["_id"]: d for d in await self.counters.find({"_id": _one_of(missing)}).to_list()}
            known.update((i, found.get(i)) for i in missing)
        out: list[Segment] = []
        for segment in segments:
            if id(segment) not in cut:
                out.append(segment)
            elif segment.level == "m":
                days = (known.get(cn.month_id(owner, segment.start)) or {}).get("days") or {}
                out += cn.day_segments(segment.start, days, segment.start, segment.end, match)
            else:
                doc = known.get(cn.day_id(owner, segment.start))
                out += cn.hour_segments(doc, segment.start, segment.end, match) if doc else []
        return sorted((s for s in out if s.n), key=lambda s: s.start)

    async def _segments(
        self,
        owner: str,
        criteria: Criteria,
        is_avatar: bool | None,
        a: dt.datetime,
        b: dt.datetime,
        match: cn.Match | None = None,
        known: dict[str, dict | None] | None = None,
        ahead: Iterable[str] = (),
    ) -> list[Segment]:
        """[a, b) cut into whole months, whole days, whole hours and the pieces of an hour at its
        ends, each with what matches in it, oldest first, the empty ones left out: one `_id $in`
        read of the account document (its `months`), the at most two months and two days the
        range cuts, and the counter documents `ahead` (what `known` then holds for `_finer`),
        beside at most two reads of an hour of files, all at once. The counter documents `known`
        holds already are not read again, and when it holds the account and every cut one,
        there is no counter read (`ahead` is then not worth one)."""
        match = match or cn.cell_filter(criteria, is_avatar)
        low, high = cn.ceil_hour(a), cn.hour_start(b)
        if low >= high:
            return [s for s in [await self._raw(owner, criteria, is_avatar, a, b)] if s.n]
        # whole months: the account document's; the months cut by low or high with their days,
        # and the days cut by them with their hours
        cut = {cn.month_id(owner, t) for t in (low, high - cn.MS) if not _whole_months(t, low, high)}
        cut |= {cn.day_id(owner, t) for t in (low, high - cn.MS) if not _whole_days(t, low, high)}
        if known is not None and all(i in known for i in (owner, *cut)):
            ids = []
        else:
            ids = [i for i in sorted({owner, *cut, *ahead}) if known is None or i not in known]
        raws = [(a, low), (high, b)]
        pieces = [self._raw(owner, criteria, is_avatar, x, y) for x, y in raws if x < y]
        if ids:
            counters, *edges = await asyncio.gather(self.counters.find({"_id": _one_of(ids)}).to_list(), *pieces)
        else:
            counters, edges = [], list(await asyncio.gather(*pieces))
        docs = {doc["_id"]: doc for doc in counters}
        if known is not None:
            known.update((i, docs.get(i)) for i in ids)
            docs = known
        account = docs.get(owner) or {}
        segments: list[Segment] = [*edges, *cn.whole_months(account.get("months"), low, high, match)]
        for doc in (docs[i] for i in sorted(cut) if docs.get(i)):
            segments += (cn.hour_segments if doc.get("span") == "d" else cn.month_segments)(doc, low, high, match)
        return sorted((s for s in segments if s.n), key=lambda s: s.start)

    async def _in_range(
        self,
        owner: str,
        criteria: Criteria,
        is_avatar: bool | None,
        a: dt.datetime,
        b: dt.datetime,
        fields: dict | None = None,
        match: cn.Match | None = None,
    ) -> list[dict]:
        """The matching files created in [a, b) (a page and an hour or two of files): the query
        names exactly the (owner, is_avatar, created_at) or (owner, created_at) index, and the
        other filters (kind, context, media type) are applied here, so that no planner is
        tempted by another index that reads more."""
        q: dict = {"owner": owner, "created_at": {"$gte": a, "$lt": b}}
        match = match or cn.cell_filter(criteria, is_avatar)
        if match.plain:  # avatars or not, nothing else: every document of the range matches
            if is_avatar is not None:
                q["is_avatar"] = is_avatar
            return await self.c.find(q, fields).to_list()
        base = query(owner, criteria, is_avatar)
        if "is_avatar" in base:
            q["is_avatar"] = base["is_avatar"]
        return [doc for doc in await self.c.find(q, fields).to_list() if match(cn.Cell.of(doc))]

    async def _raw(self, owner: str, criteria: Criteria, is_avatar: bool | None, a: dt.datetime, b: dt.datetime) -> Segment:
        """A piece of at most an hour or two, counted in `files` (index range on created_at)."""
        segment = Segment(a, b, "r")
        segment.n = cn.add_files(segment.buckets, await self._in_range(owner, criteria, is_avatar, a, b, _COUNTED))
        return segment

    async def oldest_reaching(
        self,
        owner: str,
        criteria: Criteria,
        is_avatar: bool | None,
        target: int | None = None,
        *,
        percent: int | None = None,
        known: dict[str, dict | None] | None = None,
    ) -> Criteria:
        """`owner`'s oldest matching files (by `created_at`, ties by id) whose sizes together first
        reach `target` bytes (all of them when they never do), as a selection: the criteria with
        `date_lte` at the last one's `created_at`. The counters say in which hour the sum reaches
        `target` and how much the hours before it hold: only that hour's files are read. When
        files of that very millisecond fall on both sides of the cut, the selection names the
        ids (`_oldest_ids`). `percent` instead of `target`: that share (rounded up: "reach" means
        at least that much) of the bytes all the owner's files use, by the account counters that
        the segments' read brings anyway. `known` gathers the counter documents read (for a page
        of the selection in the same request)."""
        known = {} if known is None else known
        countable = cn.countable(criteria)
        if percent is not None and not countable:
            target = _share(await self.counts(owner), percent)
        if target is not None and target <= 0:
            return Criteria(ids=[])
        low, high, before = cn.EPOCH, cn.FAR, 0
        if countable:
            match = cn.cell_filter(criteria, is_avatar)
            segments = await self._segments(owner, criteria, is_avatar, *_bounds(criteria), match, known)
            if target is None:
                assert percent is not None
                # the segments' read brings the account document (none when the dates lie in one hour)
                counts = _account_counts(known[owner]) if owner in known else await self.counts(owner)
                target = _share(counts, percent)
                if target <= 0:
                    return Criteria(ids=[])
            refined = False
            while True:
                reached, used = None, 0
                for segment in segments:
                    if used + segment.used >= target:
                        reached = segment
                        break
                    used += segment.used
                if reached is None or reached.level not in "md":
                    break
                share = (target - used) / reached.used if reached.used else 0.0
                guesses = _likely_days(owner, reached, share, 1) if reached.level == "m" else []
                segments = await self._finer(owner, segments, {reached.start}, match, known, guesses)
                refined = True
            if reached is None and refined:  # a month or day reached it, its days or hours do not:
                return await self._oldest_ids(owner, criteria, is_avatar, target)  # counters disagree
            if reached is None:  # by the counters, all of the selection does not reach it: all of it
                return criteria
            low, high, before = reached.start, reached.end, used
        assert target is not None
        q = query(owner, criteria, is_avatar)
        within = q.setdefault("created_at", {})
        within["$gte"] = max(low, within.get("$gte", low))
        within["$lt"] = high
        cursor = self.c.find(q, {"size": 1, "created_at": 1}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        total, last, tied = before, None, False
        async for doc in cursor:
            if last is not None:  # the target was reached: does the next file share its moment?
                tied = doc["created_at"] == last
                break
            total += doc["size"]
            if total >= target:
                last = doc["created_at"]
        await cursor.close()
        if last is None or tied:  # the counters disagree with the files, or a cut inside one millisecond
            return await self._oldest_ids(owner, criteria, is_avatar, target)
        return replace(criteria, date_lte=last)

    async def _oldest_ids(self, owner: str, criteria: Criteria, is_avatar: bool | None, target: int) -> Criteria:
        """The ids of the oldest files reaching `target`, read from the oldest file on: the rare
        cut inside one millisecond's files, or counters that disagree with the files (before
        fsck has rebuilt them)."""
        chosen: list[str] = []
        total = 0
        cursor = self.c.find(query(owner, criteria, is_avatar), {"size": 1}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        async for doc in cursor:
            chosen.append(str(doc["_id"]))
            total += doc["size"]
            if total >= target:
                break
        await cursor.close()
        return replace(criteria, ids=chosen)  # with its contexts: those that name avatars bring them in

    async def matching(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> list[dict]:
        """What a delete would remove: just the fields the delete needs."""
        projection = {"sha256": 1, "size": 1, "owner": 1}
        return await self.c.find(query(owner, criteria, is_avatar), projection).to_list()

    async def delete(self, owner: str, file_id: int) -> bool:
        # find + delete rather than find_one_and_delete: SecantusDB runs findAndModify as a scan
        # of the whole collection. Of two concurrent deletes only one deletes, and only it counts.
        q = {"_id": file_id, "owner": owner}
        doc = await self.c.find_one(q, _COUNTED)
        if doc is None or (await self.c.delete_one(q)).deleted_count != 1:
            return False
        await self._count(doc, -1)
        return True

    # -- per-owner counters ---------------------------------------------------------------
    async def _count(self, doc: dict, sign: int) -> None:
        await self._count_all([doc], sign)

    async def _count_all(self, docs: list[dict], sign: int) -> None:
        """Move the owners' counters for files inserted (+1) or deleted (-1): one bulk command of
        upserts, three per file (account, month, day), those of one counter document summed into
        one. The file changes it follows have happened, so a failure here is logged, not raised:
        the counters are then off until fsck recomputes them."""
        if not docs:
            return
        merged: dict[str, dict] = {}
        for doc in docs:
            for where, update in cn.increments(doc, sign):
                into = merged.setdefault(where["_id"], {"$inc": {}, "$setOnInsert": update["$setOnInsert"]})
                for path, value in update["$inc"].items():
                    into["$inc"][path] = into["$inc"].get(path, 0) + value
        try:
            ops = [UpdateOne({"_id": key}, update, upsert=True) for key, update in merged.items()]
            await self.counters.bulk_write(ops, ordered=False)
        except PyMongoError as exc:
            owners = sorted({doc.get("owner") for doc in docs})
            log.warning("file counters of %s not updated (fsck recomputes them): %s", ", ".join(owners), exc)

    async def counts(self, owner: str) -> dict[str, dict[str, int]]:
        """{bucket: {"count", "used"}} for one owner, from the counters (one point read)."""
        return _account_counts(await self.counters.find_one({"_id": owner}, {name: 1 for name in BUCKET_NAMES}))

    async def recount(self, owner: str | None = None) -> int:
        """fsck: recompute every counter document from `files` (of one owner, or of all) and
        correct those that differ; returns how many owners' counters were wrong."""
        where = {} if owner is None else {"owner": owner}
        want = cn.build(await self.c.find(where, _COUNTED).to_list())
        stored_q = {"_id": {"$ne": MARKER}} if owner is None else _counter_ids(owner)
        stored = {doc["_id"]: doc async for doc in self.counters.find(stored_q)}
        wrong: set[str] = set()
        for key in want.keys() | stored.keys():
            wanted, have = want.get(key), stored.get(key)
            have = None if have is None else cn.normal(have)
            if wanted == have:
                continue
            if wanted is None:
                await self.counters.delete_one({"_id": key})
                if not cn.counts_nothing(have):
                    wrong.add(key.split("/")[0])
            else:
                await self.counters.replace_one({"_id": key}, wanted, upsert=True)
                wrong.add(key.split("/")[0])
        return len(wrong)

    async def usage(self, owner: str, criteria: Criteria) -> dict[str, dict[str, int]]:
        """Count and bytes per stats bucket among `owner`'s files that match: from the counters
        (the account document, or the segments of the date range) when they can answer it, else
        by an aggregation over the matching files."""
        is_avatar = None if criteria.contexts is None or "avatar" in criteria.contexts else False
        if not cn.countable(criteria):
            return await self.scan_usage(owner, criteria)
        buckets: dict[str, list[int]] = {}
        if criteria.date_gte is None and criteria.date_lte is None:
            doc = await self.counters.find_one({"_id": owner}, {"cells": 1}) or {}
            cn.add_cells(buckets, doc.get("cells") or {}, cn.cell_filter(criteria, is_avatar))
        else:
            for segment in await self._segments(owner, criteria, is_avatar, *_bounds(criteria)):
                for name, (n, b) in segment.buckets.items():
                    slot = buckets.setdefault(name, [0, 0])
                    slot[0] += n
                    slot[1] += b
        counts = _zero_counts()
        for name, (n, b) in buckets.items():
            counts[name] = {"count": n, "used": b}
        return counts

    async def scan_usage(self, owner: str, criteria: Criteria) -> dict[str, dict[str, int]]:
        """`usage` by an aggregation over the matching files (and the check of the counters)."""
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

    async def lacking_sha1(self) -> dict[str, list[int]]:
        """fsck: the files that have no sha1 (stored by an earlier version), their ids by content."""
        pipeline = [{"$match": {"sha1": {"$exists": False}}}, {"$group": {"_id": "$sha256", "ids": {"$push": "$_id"}}}]
        return {d["_id"]: d["ids"] async for d in await self.c.aggregate(pipeline, allowDiskUse=True)}

    async def set_sha1(self, ids: list[int], sha1: str) -> None:
        """fsck: give these files (of one content) its sha1: by _id, no index on the digest."""
        await self.c.update_many({"_id": {"$in": ids}, "sha1": {"$exists": False}}, {"$set": {"sha1": sha1}})

    async def totals_by_owner(self) -> dict[str, int]:
        """fsck: the sum of sizes per owner."""
        cursor = await self.c.aggregate([{"$group": {"_id": "$owner", "used": {"$sum": "$size"}}}], allowDiskUse=True)
        return {d["_id"]: d["used"] async for d in cursor}

    async def refs_by_blob(self) -> dict[str, dict]:
        """fsck: per content, how many files point at it (`n`) and one of them's `md5`, `size`
        and `media_type` (what the content's document holds, should it be missing)."""
        group = {"_id": "$sha256", "n": {"$sum": 1}, **{k: {"$first": f"${k}"} for k in ("md5", "size", "media_type")}}
        cursor = await self.c.aggregate([{"$group": group}], allowDiskUse=True)  # fsck: one row per content
        return {d.pop("_id"): d async for d in cursor}
