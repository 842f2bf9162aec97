"""file_counts: each owner's files counted per cell, in three spans, so that stats with any
bucket-level filter and any page of a listing read a bounded number of small documents.

A *cell* is what a file is as far as the filters that the counters answer go: its kind, whether it
is an avatar, its media type and its context. Three kinds of document hold the
count (`n`) and bytes (`b`) per cell; all live in `file_counts`, so one insert or delete moves them
with one bulk command:

- `{_id: owner}`: the owner's whole account: the stats buckets (`images.count`, …), `cells`, and
  `months.YYYY-MM.<cell>` (one small map per calendar month, UTC, that holds files).
- `{_id: "owner/YYYY-MM", span: "m"}`: one month's days: `days.DD.<cell>`.
- `{_id: "owner/YYYY-MM-DD", span: "d"}`: one day's hours: `hours.HH.<cell>`.

A date range [a, b) is cut into whole months, whole days, whole hours and at most two pieces of an
hour at its ends (`segments`); the whole months are read from the account document (the point
read every stats request makes anyway), the days of the at most two months it cuts and the hours
of the at most two days it cuts by _id, and the pieces from `files` through the
(owner, is_avatar, created_at) or (owner, created_at) index, an hour of files at most. The whole
months live in the account document rather than in the month documents because every listing
needs all of them and none of their days: read from the month documents they cost a range read
that decodes every month's days (SecantusDB decodes whole documents, a real MongoDB reads them
whole from disk). A bare JID never holds "/", so the _ids cannot collide across owners.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from models.criteria import Criteria

# The counters' time line starts here: nothing the service stores is older.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FAR = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MS = dt.timedelta(milliseconds=1)

KINDS = {"image": "images", "video": "videos", "audio": "audio", "voice": "voices", "file": "files"}
BUCKET_NAMES = (*KINDS.values(), "avatars")
_PREFIXES = (("image/", "image"), ("video/", "video"), ("audio/", "audio"))


def kind_of(media_type: str, context: str | None) -> str:
    """A file's kind: a voice message by its context, else by its media type's top level."""
    if context == "voice":
        return "voice"
    return next((kind for prefix, kind in _PREFIXES if media_type.startswith(prefix)), "file")


@dataclass(frozen=True)
class Cell:
    kind: str
    avatar: bool
    media_type: str | None  # the whole type (`image/png`); None: none stored
    context: str | None

    @classmethod
    def of(cls, doc: dict) -> Cell:
        media_type = doc.get("media_type") or ""
        kind = doc.get("kind") or kind_of(media_type, doc.get("context"))
        return cls(kind, bool(doc.get("is_avatar")), media_type or None, doc.get("context"))

    @property
    def key(self) -> str:
        """The cell as a field name: no ".", no leading "$" (allowed on every MongoDB)."""
        media_type = "~" if self.media_type is None else "=" + _escape(self.media_type)
        context = "~" if self.context is None else "=" + _escape(self.context)
        return f"{self.kind}|{int(self.avatar)}|{media_type}|{context}"

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def parse(key: str) -> Cell:
        kind, avatar, media_type, context = key.split("|")
        return Cell(kind, avatar == "1", _unescape(media_type), _unescape(context))

    @property
    def bucket(self) -> str:
        return "avatars" if self.avatar else KINDS.get(self.kind, "files")


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace(".", "%2E").replace("$", "%24").replace("|", "%7C")


def _unescape(part: str) -> str | None:
    if part == "~":
        return None
    return part[1:].replace("%7C", "|").replace("%24", "$").replace("%2E", ".").replace("%25", "%")


def countable(criteria: Criteria) -> bool:
    """Can the counters answer this selection? Not for ids, a slot or sizes: those go to
    `files` through an index."""
    return criteria.ids is None and criteria.slot_id is None and criteria.size_gte is None and criteria.size_lte is None


_UNSEEN = "?"  # not a bucket name


class Match:
    """Which cells a selection takes: callable on a Cell, and `bucket(key)`: the stats bucket of
    the cell a counter key names, None when the selection does not take it (remembered per key:
    a listing looks at the same few cells in every month, day and hour it reads)."""

    def __init__(self, test: Callable[[Cell], bool], plain: bool) -> None:
        self.test = test
        self.plain = plain  # nothing but avatars or not: every file of that side matches
        self.known: dict[str, str | None] = {}  # counter key -> bucket (None: not selected)

    def __call__(self, cell: Cell) -> bool:
        return self.test(cell)

    def bucket(self, key: str) -> str | None:
        found = self.known.get(key, _UNSEEN)
        if found is _UNSEEN:
            cell = Cell.parse(key)
            found = self.known[key] = cell.bucket if self.test(cell) else None
        return found


def cell_filter(criteria: Criteria, is_avatar: bool | None) -> Match:
    """The cells that `models.files.query(owner, criteria, is_avatar)` selects, dates aside; keep
    the two in step."""
    named = None if criteria.contexts is None else set(criteria.contexts)
    if named is not None and "avatar" in named and is_avatar is False:
        is_avatar = None
    types = None if criteria.types is None else set(criteria.types)
    wanted = criteria.media_type or None
    exact = wanted is not None and "/" in wanted  # a whole type; else a top level (`image/…`)
    prefix = f"{wanted}/"

    def match(cell: Cell) -> bool:
        if named is not None and not (cell.context in named or (cell.context is None and "file" in named)):
            return False
        if is_avatar is not None and cell.avatar != is_avatar:
            return False
        if types is not None and cell.kind not in types:
            return False
        if wanted is None:
            return True
        if exact:
            return cell.media_type == wanted
        return cell.media_type is not None and cell.media_type.startswith(prefix)

    return Match(match, named is None and types is None and wanted is None)


# -- keys and spans --------------------------------------------------------------------------
def month_key(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def month_of_key(key: str) -> dt.datetime:
    """The start of the month a "YYYY-MM" key names."""
    return dt.datetime(int(key[:4]), int(key[5:7]), 1, tzinfo=dt.UTC)


def day_of_key(key: str) -> dt.datetime:
    """The start of the day a "YYYY-MM-DD" key names."""
    return dt.datetime(int(key[:4]), int(key[5:7]), int(key[8:10]), tzinfo=dt.UTC)


def month_start(t: dt.datetime) -> dt.datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(t: dt.datetime) -> dt.datetime:
    start = month_start(t)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def day_start(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def hour_start(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: dt.datetime) -> dt.datetime:
    start = hour_start(t)
    return start if start == t else start + HOUR


def month_id(owner: str, t: dt.datetime) -> str:
    return f"{owner}/{month_key(t)}"


def day_id(owner: str, t: dt.datetime) -> str:
    return f"{owner}/{t.year}-{t.month:02d}-{t.day:02d}"  # `{t:%Y-%m-%d}` (glibc), without strftime


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def increments(doc: dict, sign: int) -> list[tuple[dict, dict]]:
    """(filter, update) for each counter document a file's insert (+1) or delete (-1) moves."""
    owner, size = doc["owner"], doc["size"] * sign
    cell = Cell.of(doc)
    key = cell.key
    at = _utc(doc["created_at"])
    total = {f"{cell.bucket}.count": sign, f"{cell.bucket}.used": size, f"cells.{key}.n": sign, f"cells.{key}.b": size}
    months = f"months.{month_key(at)}.{key}"
    total[f"{months}.n"], total[f"{months}.b"] = sign, size
    day = f"{at.day:02d}"
    month = {f"days.{day}.{key}.n": sign, f"days.{day}.{key}.b": size}
    hour = f"{at.hour:02d}"
    daily = {f"hours.{hour}.{key}.n": sign, f"hours.{hour}.{key}.b": size}
    return [
        ({"_id": owner}, {"$inc": total, "$setOnInsert": {"owner": owner, "span": "a"}}),
        ({"_id": month_id(owner, at)}, {"$inc": month, "$setOnInsert": {"owner": owner, "span": "m", "key": month_key(at)}}),
        ({"_id": day_id(owner, at)}, {"$inc": daily, "$setOnInsert": {"owner": owner, "span": "d", "key": f"{at:%Y-%m-%d}"}}),
    ]


def build(docs: Iterable[dict]) -> dict[str, dict]:
    """fsck: every counter document, by _id, computed from files (fields as `increments` moves
    them, cells that count nothing left out)."""
    out: dict[str, dict] = {}
    for doc in docs:
        for where, update in increments(doc, 1):
            target = out.setdefault(where["_id"], {"_id": where["_id"], **update["$setOnInsert"]})
            for path, value in update["$inc"].items():
                node = target
                *parents, leaf = path.split(".")
                for name in parents:
                    node = node.setdefault(name, {})
                node[leaf] = node.get(leaf, 0) + value
    return {key: normal(doc) for key, doc in out.items()}


def normal(doc: dict) -> dict:
    """A counter document without the cells that count nothing (a delete leaves zeros behind),
    for comparing what is stored with what `build` computes."""

    def clean(node: dict, depth: int) -> dict:
        result = {}
        for name, value in node.items():
            if isinstance(value, dict):
                inner = clean(value, depth + 1)
                if inner:
                    result[name] = inner
            elif depth == 0 or value:
                result[name] = value
        return result

    cleaned = clean(doc, 0)
    for name in BUCKET_NAMES:  # the account document always shows its buckets
        if cleaned.get("span") == "a" or "/" not in str(cleaned.get("_id")):
            stored = doc.get(name) or {}
            cleaned[name] = {"count": int(stored.get("count", 0)), "used": int(stored.get("used", 0))}
    return cleaned


def counts_nothing(doc: dict | None) -> bool:
    """A counter document (normalised) that counts no file."""
    if doc is None:
        return True
    return not any(doc.get(name) for name in ("cells", "months", "days", "hours")) and not any(
        (doc.get(name) or {}).get("count") or (doc.get(name) or {}).get("used") for name in BUCKET_NAMES
    )


# -- reading ---------------------------------------------------------------------------------
@dataclass
class Segment:
    """A piece of the time line [start, end) and what matches in it (bucket -> [count, bytes]);
    `level`: m(onth), d(ay), h(our) or r(aw: counted in files)."""

    start: dt.datetime
    end: dt.datetime
    level: str
    buckets: dict[str, list[int]] = field(default_factory=dict)
    n: int = 0  # files in all buckets: kept by `add_cells` and `add_files` (a page sums it often)

    @property
    def used(self) -> int:
        return sum(value[1] for value in self.buckets.values())


def add_cells(buckets: dict[str, list[int]], cells: dict, match: Match) -> int:
    """Add the matching cells' counts and bytes to `buckets`; returns the count added."""
    known, added = match.known, 0
    for key, value in (cells or {}).items():
        name = known.get(key, _UNSEEN)
        if name is _UNSEEN:
            name = match.bucket(key)
        if name is None:
            continue
        n, b = value.get("n", 0), value.get("b", 0)
        if n or b:
            added += n
            slot = buckets.get(name)
            if slot is None:
                buckets[name] = [n, b]
            else:
                slot[0] += n
                slot[1] += b
    return added


def add_files(buckets: dict[str, list[int]], docs: Iterable[dict]) -> int:
    """Count `docs` (files) into `buckets`; returns how many."""
    added = 0
    for doc in docs:
        slot = buckets.setdefault(Cell.of(doc).bucket, [0, 0])
        slot[0] += 1
        slot[1] += doc["size"]
        added += 1
    return added


def whole_months(months: dict, a: dt.datetime, b: dt.datetime, match: Match) -> list[Segment]:
    """The months of the account document's `months` that lie wholly within [a, b], counted."""
    out = []
    for key, cells in (months or {}).items():
        start = month_of_key(key)
        end = next_month(start)
        if a <= start and end <= b:
            buckets: dict[str, list[int]] = {}
            if n := add_cells(buckets, cells, match):  # the empty ones are dropped anyway
                out.append(Segment(start, end, "m", buckets, n))
    return out


def _whole_units(
    units: dict,
    begin: Callable[[str], dt.datetime],
    length: dt.timedelta,
    tag: str,
    a: dt.datetime,
    b: dt.datetime,
    match: Match,
) -> list[Segment]:
    """The units (days of a month, hours of a day) that lie wholly within [a, b], counted."""
    out = []
    for name, cells in units.items():
        start = begin(name)
        if a <= start and start + length <= b:
            buckets: dict[str, list[int]] = {}
            if n := add_cells(buckets, cells, match):  # the empty ones are dropped anyway
                out.append(Segment(start, start + length, tag, buckets, n))
    return out


def day_segments(month: dt.datetime, days: dict, a: dt.datetime, b: dt.datetime, match: Match) -> list[Segment]:
    return _whole_units(days, lambda name: month.replace(day=int(name)), DAY, "d", a, b, match)


def month_segments(doc: dict, a: dt.datetime, b: dt.datetime, match: Match) -> list[Segment]:
    """The whole days inside [a, b) of one month document (the days a or b cuts are left to the
    day documents)."""
    return day_segments(month_of_key(doc["key"]), doc.get("days") or {}, a, b, match)


def hour_segments(doc: dict, a: dt.datetime, b: dt.datetime, match: Match) -> list[Segment]:
    day = day_of_key(doc["key"])
    return _whole_units(doc.get("hours") or {}, lambda name: day.replace(hour=int(name)), HOUR, "h", a, b, match)
