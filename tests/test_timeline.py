"""The month/day/hour file counters (models/counters.py) against a brute-force pass over the same
files: stats with every counter-answered filter and date ranges cut anywhere (inside an hour,
across days and months), every newest- and oldest-first page, and `oldest_reaching`; fsck
rebuilds every counter document from `files`. Files are written by the model itself (inserts
and deletes move the counters) over many days, with shared timestamps. Real database server."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

from models.counters import Cell, counts_nothing, normal
from models.criteria import Criteria, Page
from models.files import query

OWNER = "tl@example.org"
NOW = dt.datetime(2026, 3, 15, 12, 30, tzinfo=dt.UTC)
TYPES = [("image/png", None), ("image/jpeg", "chat"), ("video/webm", None), ("audio/ogg", "voice"), ("audio/ogg", None)]
TYPES += [("application/pdf", "chat"), ("text/plain", None), ("image/webp", "avatar"), ("application/x.odd", "a.b$|%")]


def _doc(file_id: int, at: dt.datetime, rng: random.Random) -> dict:
    media_type, context = rng.choice(TYPES)
    kind = Cell.of({"media_type": media_type, "context": context}).kind
    return {
        "_id": file_id,
        "owner": OWNER,
        "slot_id": f"s{file_id}",
        "name": f"f{file_id}",
        "sha256": f"{file_id:064x}",
        "md5": f"{file_id:032x}",
        "size": rng.randint(1, 5000),
        "media_type": media_type,
        "kind": kind,
        "is_avatar": context == "avatar",
        "context": context,
        "created_at": at,
    }


async def _seed(parts, count: int = 260) -> list[dict]:
    """Files from minutes to two years back, in clumps (a few share a millisecond), some deleted."""
    rng = random.Random(13)
    files = parts.files
    docs = []
    for i in range(1, count + 1):
        if i % 9 == 0 and docs:
            at = docs[-1]["created_at"]  # the same timestamp as another file
        else:
            minutes = rng.choice([rng.randint(0, 300), rng.randint(0, 90 * 1440), rng.randint(0, 730 * 1440)])
            at = NOW - dt.timedelta(minutes=minutes)
            at = at.replace(microsecond=rng.randint(0, 999) * 1000)
        doc = _doc(i, at, rng)
        await files.insert(doc)
        docs.append(doc)
    for doc in docs[::17]:
        assert await files.delete(OWNER, doc["_id"])
    gone = {doc["_id"] for doc in docs[::17]}
    return [doc for doc in docs if doc["_id"] not in gone]


def _brute(docs: list[dict], criteria: Criteria, is_avatar: bool | None) -> list[dict]:
    """The files `query` selects, matched here in Python (only the fields the counters cover)."""
    q = query(OWNER, criteria, is_avatar)
    out = []
    for doc in docs:
        if "is_avatar" in q and doc["is_avatar"] != q["is_avatar"]:
            continue
        if "context" in q and doc["context"] not in q["context"]["$in"]:
            continue
        if "kind" in q and doc["kind"] not in q["kind"]["$in"]:
            continue
        if criteria.media_type and "/" in criteria.media_type and doc["media_type"] != criteria.media_type:
            continue
        if criteria.media_type and "/" not in criteria.media_type and not doc["media_type"].startswith(criteria.media_type + "/"):
            continue
        at = doc["created_at"]
        if (criteria.date_gte and at < criteria.date_gte) or (criteria.date_lte and at > criteria.date_lte):
            continue
        out.append(doc)
    return out


def _bucket_sums(docs: list[dict]) -> dict:
    sums: dict = {}
    for doc in docs:
        slot = sums.setdefault(Cell.of(doc).bucket, {"count": 0, "used": 0})
        slot["count"] += 1
        slot["used"] += doc["size"]
    return sums


def _nonzero(counts: dict) -> dict:
    return {name: value for name, value in counts.items() if value["count"] or value["used"]}


RANGES = [
    (None, None),
    (NOW - dt.timedelta(minutes=50), None),  # inside the current hour and the one before
    (NOW - dt.timedelta(minutes=20), NOW - dt.timedelta(minutes=5)),  # within one hour
    (NOW - dt.timedelta(days=3, minutes=7), NOW - dt.timedelta(hours=5, seconds=3)),  # hours and days
    (NOW - dt.timedelta(days=400, hours=3, minutes=1), NOW - dt.timedelta(days=35, minutes=13)),  # months
    (dt.datetime(2025, 2, 1, tzinfo=dt.UTC), dt.datetime(2025, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)),  # whole months
    (dt.datetime(2025, 6, 3, tzinfo=dt.UTC), dt.datetime(2025, 6, 3, 23, 59, 59, 999000, tzinfo=dt.UTC)),  # one whole day
    (None, NOW - dt.timedelta(days=200, microseconds=1500)),
]
FILTERS = [
    Criteria(),
    Criteria(media_type="image"),
    Criteria(media_type="application"),
    Criteria(types=["audio", "voice"]),
    Criteria(types=["image"], contexts=["chat", "file"]),
    Criteria(contexts=["avatar"]),
    Criteria(contexts=["a.b$|%"]),
    Criteria(contexts=["file"], media_type="audio"),
    Criteria(media_type="image/png"),
    Criteria(media_type="application/x.odd", types=["file"]),
    Criteria(media_type="imag"),
]


async def test_stats_equal_a_brute_force_count(parts):
    docs = await _seed(parts)
    for gte, lte in RANGES:
        for base in FILTERS:
            criteria = Criteria(**{**vars(base), "date_gte": gte, "date_lte": lte})
            is_avatar = None if criteria.contexts is None or "avatar" in criteria.contexts else False
            want = _bucket_sums(_brute(docs, criteria, is_avatar))
            assert _nonzero(await parts.files.usage(OWNER, criteria)) == want, (criteria, gte, lte)
            assert _nonzero(await parts.files.scan_usage(OWNER, criteria)) == want, (criteria, gte, lte)
    # sizes are not in the counters: answered from files, the same way
    sized = Criteria(size_gte=2500, date_gte=RANGES[4][0])
    want = _bucket_sums([d for d in docs if d["size"] >= 2500 and d["created_at"] >= sized.date_gte])
    assert want and _nonzero(await parts.files.usage(OWNER, sized)) == want


async def test_every_page_is_the_slice_of_the_full_order(parts):
    docs = await _seed(parts)
    selections = (Criteria(), Criteria(types=["image", "file"]), Criteria(contexts=["chat"]), Criteria(media_type="audio/ogg"))
    for gte, lte in RANGES[:5]:
        for base in selections:
            criteria = Criteria(**{**vars(base), "date_gte": gte, "date_lte": lte})
            for direction in (-1, 1):
                matching = _brute(docs, criteria, False)
                full = [d["_id"] for d in sorted(matching, key=lambda d: (d["created_at"], d["_id"]), reverse=direction < 0)]
                for per_page in (1, 7, 50):
                    pages = -(-len(full) // per_page)
                    for number in {1, 2, pages // 2, max(pages - 1, 1), pages, pages + 1}:
                        page = Page(number, per_page, [("created_at", direction)])
                        total, got = await parts.files.page(OWNER, criteria, page, False)
                        want = full[(number - 1) * per_page : number * per_page]
                        assert total == len(full)
                        assert [d["_id"] for d in got] == want, (criteria, direction, per_page, number)


async def test_oldest_reaching_is_a_bounded_selection(parts):
    """files/percent/<n>/: the oldest files reaching a target, as a date bound read from the
    counters and one hour of files (ids only when files of one millisecond straddle the cut)."""
    docs = await _seed(parts)
    for contexts in (None, ["file", "avatar"], ["voice"]):
        chosen = sorted(_brute(docs, Criteria(contexts=contexts), False), key=lambda d: (d["created_at"], d["_id"]))
        used = sum(d["size"] for d in chosen)
        sums = [sum(d["size"] for d in chosen[: i + 1]) for i in range(len(chosen))]
        # a cut between two files of one millisecond (the seed makes some)
        inside = [sums[i] for i in range(len(chosen) - 1) if chosen[i]["created_at"] == chosen[i + 1]["created_at"]]
        assert inside or contexts, "the seed has files sharing a millisecond"
        for target in (1, used // 10, used // 3, used // 2, used - 1, used, used + 10, *inside[:3]):
            want, total = [], 0
            for doc in chosen:
                if total >= target:
                    break
                want.append(doc["_id"])
                total += doc["size"]
            selection = await parts.files.oldest_reaching(OWNER, Criteria(contexts=contexts), False, target)
            if selection.ids is not None:
                got = sorted(int(i) for i in selection.ids)
                last = want[-1]
                tied = [d for d in chosen if d["created_at"] == next(c for c in chosen if c["_id"] == last)["created_at"]]
                # ids only for a cut inside one millisecond
                assert len(tied) > 1 and tied[-1]["_id"] != last, (contexts, target)
            else:
                # a date bound; a target past all there is: the whole selection (no ids read)
                assert selection.contexts == contexts
                got = sorted(d["_id"] for d in _brute(docs, selection, False))
            assert got == sorted(want), (contexts, target)
    assert (await parts.files.oldest_reaching(OWNER, Criteria(), False, 0)).ids == []


async def test_fsck_rebuilds_every_counter(parts):
    await _seed(parts, 120)
    files, counters = parts.files, parts.db.db["file_counts"]
    stored = [normal(doc) async for doc in counters.find({"owner": OWNER})]
    right = {doc["_id"]: doc for doc in stored if not counts_nothing(doc)}  # deletes leave empty days
    assert len(right) > 20  # the account, months and days
    assert await files.recount(OWNER) == 0
    # what a crash between a file's insert and its counter update (or a bug) could leave
    some_month = next(key for key in right if key.count("-") == 1)
    some_day = next(key for key in right if key.count("-") == 2)
    await counters.delete_one({"_id": some_month})
    await counters.update_one({"_id": OWNER}, {"$unset": {f"months.{some_month.split('/')[1]}": ""}})  # its whole-month cells
    await counters.update_one({"_id": some_day}, {"$inc": {"hours.03.image|0|=image|~.n": 4}}, upsert=True)
    await counters.insert_one({"_id": "ghost@example.org/2020-01", "owner": "ghost@example.org", "span": "m", "cells": {}})
    wrong = Criteria(date_gte=NOW - dt.timedelta(days=800))
    assert await files.usage(OWNER, wrong) != await files.scan_usage(OWNER, wrong)
    assert await files.recount() == 1  # the ghost counts nothing: removed, not a fix
    assert {doc["_id"]: normal(doc) async for doc in counters.find({"owner": OWNER})} == right
    assert await counters.find_one({"_id": "ghost@example.org/2020-01"}) is None
    assert await files.usage(OWNER, wrong) == await files.scan_usage(OWNER, wrong)


async def test_fsck_of_one_owner_reads_its_counters_by_id_alone(parts):
    """`recount(owner)` finds the owner's counter documents by _id (the account document and the
    "owner/…" range; file_counts has no other index): it repairs a damaged month and day of
    theirs and leaves the counters of owners whose JIDs begin the same alone."""
    await _seed(parts, 60)
    files, counters = parts.files, parts.db.db["file_counts"]
    stored = [normal(doc) async for doc in counters.find({"owner": OWNER})]
    right = {doc["_id"]: doc for doc in stored if not counts_nothing(doc)}  # deletes leave empty days
    some_month = next(key for key in right if key.count("-") == 1)
    some_day = next(key for key in right if key.count("-") == 2)
    await counters.update_one({"_id": some_month}, {"$inc": {"days.01.image|0|=image|~.n": 2}})
    await counters.delete_one({"_id": some_day})
    # neighbours in _id order: "tl@example.org.uk/…" sorts before "tl@example.org/", "…orgx" after "…org0"
    neighbours = [
        {"_id": f"{OWNER}.uk/2026-03", "owner": f"{OWNER}.uk", "span": "m", "key": "2026-03", "days": {"01": {"x": {"n": 7}}}},
        {"_id": f"{OWNER}x/2026-03-01", "owner": f"{OWNER}x", "span": "d", "key": "2026-03-01", "hours": {"01": {"x": {"n": 7}}}},
        {"_id": f"{OWNER}x", "owner": f"{OWNER}x", "span": "a", "cells": {"x": {"n": 7}}},
    ]
    await counters.insert_many(neighbours)
    assert await files.recount(OWNER) == 1
    assert {doc["_id"]: normal(doc) async for doc in counters.find({"owner": OWNER})} == right  # the empty ones gone
    for doc in neighbours:  # no file counts them, yet one owner's fsck does not touch them
        assert await counters.find_one({"_id": doc["_id"]}) == doc
    assert await files.recount(OWNER) == 0


async def test_pages_of_ids_are_the_sorted_selection(parts):
    """files/percent/<n>/ and `id=` lists page the named files: the owner's only, in any order."""
    docs = await _seed(parts, 60)
    other = {**_doc(10_000, NOW, random.Random(1)), "owner": "other@example.org", "slot_id": "other"}
    await parts.files.insert(other)
    named = [d for d in docs[::2] if not d["is_avatar"]]
    ids = [str(d["_id"]) for d in named] + [str(other["_id"]), "999999", "x"]
    for order in ([("name", 1)], [("size", -1)], [("created_at", -1)], [("id", 1)], [("media_type", 1), ("size", 1)]):
        keys = [("_id" if name == "id" else name, direction) for name, direction in order]
        if keys[-1][0] != "_id":
            keys.append(("_id", keys[-1][1]))
        expected = list(named)
        for key, direction in reversed(keys):
            expected.sort(key=lambda d, k=key: d[k], reverse=direction < 0)
        want = [d["_id"] for d in expected]
        for number in (1, 2, 3, 4):
            total, got = await parts.files.page(OWNER, Criteria(ids=ids), Page(number, 9, order), False)
            assert total == len(named)
            assert [d["_id"] for d in got] == want[(number - 1) * 9 : number * 9], (order, number)


async def test_concurrent_first_files_of_a_day_all_count(parts):
    """Uploads that finish together on a new day race to create the same counter documents:
    every one of them counts."""
    rng = random.Random(5)
    at = NOW + dt.timedelta(days=3)
    docs = [_doc(50_000 + i, at + dt.timedelta(milliseconds=i), rng) for i in range(40)]
    await asyncio.gather(*(parts.files.insert(doc) for doc in docs))
    day = Criteria(date_gte=at - dt.timedelta(hours=2), date_lte=at + dt.timedelta(hours=2))
    assert await parts.files.usage(OWNER, day) == await parts.files.scan_usage(OWNER, day)
    assert sum(b["count"] for b in (await parts.files.counts(OWNER)).values()) == 40
    assert await parts.files.recount(OWNER) == 0


async def test_counters_kept_by_version_2_are_rebuilt_at_start_up(parts):
    """Version 2 kept each month's `cells` in its month document and no `months` in the account
    document: start-up (`migrate`, which server.py and fsck run) rebuilds them, so an upgraded
    deployment never pages or counts from the old shape."""
    docs = await _seed(parts, 80)
    files, counters = parts.files, parts.db.db["file_counts"]
    for doc in await counters.find({"owner": OWNER, "span": "m"}).to_list():  # back to version 2's shape
        cells: dict = {}
        for day in doc["days"].values():
            for key, value in day.items():
                slot = cells.setdefault(key, {"n": 0, "b": 0})
                slot["n"] += value["n"]
                slot["b"] += value["b"]
        await counters.update_one({"_id": doc["_id"]}, {"$set": {"cells": cells}})
    await counters.update_one({"_id": OWNER}, {"$unset": {"months": ""}})
    await counters.replace_one({"_id": "#counters"}, {"v": 2}, upsert=True)
    full = [d["_id"] for d in sorted(_brute(docs, Criteria(), False), key=lambda d: (d["created_at"], d["_id"]), reverse=True)]
    assert (await files.page(OWNER, Criteria(), Page(2, 7), False))[1] != full[7:14]  # what the old shape would show

    assert await files.migrate(parts.file_ids) == 0
    assert await files.recount(OWNER) == 0  # every counter document as fsck computes it
    assert (await counters.find_one({"_id": "#counters"}))["v"] >= 3
    for number in (1, 2, 5):
        total, got = await files.page(OWNER, Criteria(), Page(number, 7), False)
        assert total == len(full) and [d["_id"] for d in got] == full[(number - 1) * 7 : number * 7]
    since = Criteria(date_gte=NOW - dt.timedelta(days=400, hours=3))
    assert await files.usage(OWNER, since) == await files.scan_usage(OWNER, since)


async def test_a_first_page_of_the_last_two_days_is_two_reads(parts):
    """The first newest-first page reads the account, month and day counters of the last two
    days in one `_id $in` and then its files: two commands when it lies in those days, and the
    same answer as every other page (the other counters are read when it does not)."""
    rng = random.Random(21)
    now = dt.datetime.now(dt.UTC)
    docs = []
    for i in range(1, 91):
        at = now - dt.timedelta(minutes=rng.choice([rng.randint(0, 40 * 60), rng.randint(0, 9 * 1440)]))
        doc = _doc(70_000 + i, at.replace(microsecond=at.microsecond // 1000 * 1000), rng)
        await parts.files.insert(doc)
        docs.append(doc)
    full = [d["_id"] for d in sorted(_brute(docs, Criteria(), False), key=lambda d: (d["created_at"], d["_id"]), reverse=True)]
    recent = sum(1 for d in docs if not d["is_avatar"] and d["created_at"] >= now - dt.timedelta(hours=24))
    sent: list[str] = []
    parts.db.commands.count = sent.append
    for per_page in (3, recent, 40, 100):
        sent.clear()
        total, got = await parts.files.page(OWNER, Criteria(), Page(1, per_page), False)
        assert total == len(full) and [d["_id"] for d in got] == full[:per_page], per_page
        if per_page <= recent:
            assert sent == ["find", "find"], per_page
    for number in (2, 3):
        total, got = await parts.files.page(OWNER, Criteria(), Page(number, 40), False)
        assert [d["_id"] for d in got] == full[(number - 1) * 40 : number * 40]


async def test_percent_with_counters_that_disagree_does_not_select_everything(parts):
    """Regression: a selection whose month counters reach the target but whose days do not (the
    month's document lost: what a crash between a file's insert and its counter update could
    leave) is read from the files, not returned whole: DELETE files/percent/50/ of three files of
    100 bytes deleted all three."""
    files = parts.files
    for i in range(3):
        await files.insert(_doc(i + 1, NOW + dt.timedelta(days=i), random.Random(i)) | {"size": 100, "context": None})
    await parts.db.db["file_counts"].delete_one({"_id": f"{OWNER}/{NOW:%Y-%m}"})
    selection = await files.oldest_reaching(OWNER, Criteria(), False, 150)
    chosen = sorted(d["_id"] for d in await files.matching(OWNER, selection, False))
    assert chosen == [1, 2]


async def test_a_percent_page_reads_its_counters_once(parts):
    """files/percent/<n>/: the share is taken from the account counters of the segments' read
    (no read of its own), and the page of the selection reuses the counter documents read for
    it: the same selection and page as with a target and a fresh page, in fewer commands."""
    docs = await _seed(parts)
    files = parts.files
    used = sum(d["size"] for d in docs)  # the seed's avatars count in the owner's bytes too
    sent: list[str] = []
    parts.db.commands.count = sent.append
    for percent in (1, 10, 37, 100):
        target = -(-used * percent // 100)
        sent.clear()
        plain = await files.oldest_reaching(OWNER, Criteria(), False, target)
        fresh = await files.page(OWNER, plain, Page(1, 20), False)
        before = len(sent)
        sent.clear()
        known: dict = {}
        shared = await files.oldest_reaching(OWNER, Criteria(), False, percent=percent, known=known)
        page = await files.page(OWNER, shared, Page(1, 20), False, known)
        assert shared == plain, percent
        assert (page[0], [d["_id"] for d in page[1]]) == (fresh[0], [d["_id"] for d in fresh[1]]), percent
        assert len(sent) < before, (percent, sent)
    assert await files.oldest_reaching(OWNER, Criteria(), False, percent=100, known={}) != Criteria(ids=[])
    await parts.db.db["file_counts"].delete_many({"owner": OWNER})
    await parts.db.db["file_counts"].delete_one({"_id": OWNER})
    assert await files.oldest_reaching(OWNER, Criteria(), False, percent=50) == Criteria(ids=[])  # nothing counted


async def test_a_page_inside_a_month_of_even_uploads_is_three_reads(parts):
    """A page position inside a month is looked for among the days where it would lie if the
    month's files were spread evenly: their counters come with the month's, so a middle or
    last page of evenly spread uploads is three commands (the counters, the month with those
    days, the files), and every page (a guess that misses too) is still the slice of the full
    order."""
    rng = random.Random(8)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    docs = []
    for i in range(1, 601):  # one file every four hours, for 100 days
        at = start + dt.timedelta(hours=4 * i, minutes=rng.randint(0, 59), milliseconds=rng.randint(0, 999))
        doc = {**_doc(80_000 + i, at, rng), "is_avatar": False, "context": None}
        await parts.files.insert(doc)
        docs.append(doc)
    sent: list[str] = []
    parts.db.commands.count = sent.append
    for direction in (-1, 1):
        full = [d["_id"] for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=direction < 0)]
        for number in (7, 25, 31, 52, 60):
            sent.clear()
            total, got = await parts.files.page(OWNER, Criteria(), Page(number, 10, [("created_at", direction)]), False)
            assert total == 600 and [d["_id"] for d in got] == full[(number - 1) * 10 : number * 10], (direction, number)
            if number < 60:  # the last 100 days' month is a third full: not even over the month
                assert sent == ["find", "find", "find"], (direction, number, sent)


async def test_a_file_the_driver_cannot_encode_fails_alone_in_its_group(parts):
    """Regression: group commit sent concurrent inserts as one insert_many; a document BSON
    cannot encode (a lone surrogate in its metadata) made the whole group raise, so every upload
    committed beside it (any user's) failed. It now fails alone, and the others are inserted and
    counted."""
    rng = random.Random(5)
    good = [_doc(70_000 + i, NOW, rng) | {"context": None, "is_avatar": False} for i in range(3)]
    bad = _doc(70_009, NOW, rng) | {"context": None, "is_avatar": False, "metadata": {"a": "\ud800"}}
    results = await asyncio.gather(*(parts.files.insert(d) for d in [good[0], good[1], bad, good[2]]), return_exceptions=True)
    assert [r is None for r in results] == [True, True, False, True], results
    stored = {d["_id"] async for d in parts.db.files.find({"_id": {"$gte": 70_000, "$lt": 71_000}}, {"_id": 1})}
    assert stored == {70_000, 70_001, 70_002}
    day = Criteria(date_gte=NOW - dt.timedelta(hours=1), date_lte=NOW + dt.timedelta(hours=1))
    assert await parts.files.usage(OWNER, day) == await parts.files.scan_usage(OWNER, day)


async def test_a_failure_in_the_one_by_one_fallback_does_not_fail_files_already_inserted(parts, monkeypatch):
    """Review: in the fallback each document goes alone, in turn; an exception of a later one
    (here the connection lost on its insert_one) leaves `_insert_group` and Groups hands it to
    every request of the group, also to the file inserted and counted just before it. Its
    upload then drops its content reference and releases its bytes (services/files.py _insert)
    although the file document stays, listed and counted."""
    from pymongo.errors import AutoReconnect

    rng = random.Random(6)
    good = [_doc(71_000 + i, NOW, rng) | {"context": None, "is_avatar": False} for i in range(2)]
    bad = _doc(71_009, NOW, rng) | {"context": None, "is_avatar": False, "metadata": {"a": "\ud800"}}
    insert_one = parts.files.c.insert_one

    async def lost_on_the_last(doc, *args, **kwargs):
        if doc["_id"] == 71_001:
            raise AutoReconnect("connection lost")
        return await insert_one(doc, *args, **kwargs)

    monkeypatch.setattr(parts.files.c, "insert_one", lost_on_the_last)
    results = await asyncio.gather(*(parts.files.insert(d) for d in [good[0], bad, good[1]]), return_exceptions=True)
    stored = {d["_id"] async for d in parts.db.files.find({"_id": {"$gte": 71_000, "$lt": 72_000}}, {"_id": 1})}
    assert stored == {71_000}
    assert results[0] is None, results  # inserted and counted: its upload must not fail


async def test_a_group_of_more_than_one_batch_was_partly_sent_before_the_encoding_failed(parts):
    """Review: insert_many encodes and sends batch by batch (48 MB or 100 000 documents each):
    an unencodable document in a later batch raises after the earlier batches were inserted.
    The fallback then inserts those again: DuplicateKeyError on _id, each reported as failed
    (its upload drops its content reference and releases its bytes) while its document stays,
    and none of them is counted."""
    rng = random.Random(7)
    big = [_doc(72_000 + i, NOW, rng) | {"context": None, "is_avatar": False, "pad": "x" * 9_900_000} for i in range(5)]
    bad = _doc(72_009, NOW, rng) | {"context": None, "is_avatar": False, "metadata": {"a": "\ud800"}}
    results = await asyncio.gather(*(parts.files.insert(d) for d in [*big, bad]), return_exceptions=True)
    stored = {d["_id"] async for d in parts.db.files.find({"_id": {"$gte": 72_000, "$lt": 73_000}}, {"_id": 1})}
    inserted = [r is None for r in results[:5]]
    assert inserted == [d["_id"] in stored for d in big], (stored, results)
    day = Criteria(date_gte=NOW - dt.timedelta(hours=1), date_lte=NOW + dt.timedelta(hours=1))
    assert await parts.files.usage(OWNER, day) == await parts.files.scan_usage(OWNER, day)
