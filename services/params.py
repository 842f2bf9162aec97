"""Request parameters, typed: one place that turns what a client sent into values or a 400.

Tornado-free: the handler passes the query arguments and the body as it received them.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import math
import re
from typing import Any
from urllib.parse import parse_qs

from models.criteria import DEFAULT_ORDER, DEFAULT_PER_PAGE, MAX_PER_PAGE, SORT_FIELDS, Criteria, Page
from models.files import KINDS
from services.errors import Invalid
from settings import FALSE_WORDS, TRUE_WORDS

INT64_MAX = 2**63 - 1  # the largest integer the database stores; larger ones are a 400
# Dates are held within these, so that a filter's day and month arithmetic stays in the calendar
# (no file is dated outside them).
EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("parameters must be UTF-8") from None
    return value


def _invalid(name: str, what: str) -> Invalid:
    return Invalid(f"{name}: {what}", fields={name: what})


def parse_bool(name: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise _invalid(name, "expected true or false")


def parse_datetime(name: str, value: str, end_of_day: bool = False) -> dt.datetime:
    """`YYYY-MM-DD` or ISO 8601 with or without an offset (naive = UTC). A bare date used as an
    upper bound means the end of that day."""
    text = value.strip()
    try:
        if _DATE.fullmatch(text):
            day = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
            day = day + dt.timedelta(days=1, milliseconds=-1) if end_of_day else day
            return min(max(day, EARLIEST), LATEST)
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return min(max(parsed.astimezone(dt.UTC), EARLIEST), LATEST)
    except (ValueError, OverflowError):  # OverflowError: past year 1 or 9999 once moved to UTC
        raise _invalid(name, "expected YYYY-MM-DD or an ISO 8601 datetime") from None


def decode_body(content_type: str, body: bytes) -> dict[str, list[Any]]:
    """A request body (JSON object, form-encoded or multipart) as name -> values."""
    if not body:
        return {}
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Invalid("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise Invalid("JSON body must be an object")
        return {str(k): [v] for k, v in data.items()}  # a JSON list stays one value: only list() takes it
    if kind == "application/x-www-form-urlencoded":
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise Invalid("parameters must be UTF-8") from None
        return {k: list(v) for k, v in parsed.items()}
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    return {}


def _multipart(content_type: str, body: bytes) -> dict[str, list[Any]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    out: dict[str, list[Any]] = {}
    if not message.is_multipart():
        raise Invalid("malformed multipart body")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename() is not None:
            continue  # files are taken by the upload routes only
        out.setdefault(str(name), []).append(_text(part.get_payload(decode=True) or b""))
    return out


class Params:
    """Query string plus body: name -> values, with typed getters that raise Invalid (400)."""

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self.values = values

    @classmethod
    def from_request(cls, query: dict[str, list[bytes]], content_type: str, body: bytes) -> Params:
        merged: dict[str, list[Any]] = {}
        for name, values in query.items():
            merged.setdefault(_text(name), []).extend(_text(v) for v in values)
        merged.update(decode_body(content_type, body))
        return cls(merged)

    def raw(self, name: str) -> Any:
        """The last value given for `name`; None when absent or empty."""
        values = self.values.get(name)
        if not values:
            return None
        value = values[-1]
        return None if value == "" else value

    def str(self, name: str, max_length: int | None = None) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise _invalid(name, "expected a string")
        value = f"{value}"
        if "\x00" in value:
            raise _invalid(name, "contains a NUL character")
        if max_length is not None and len(value) > max_length:
            raise _invalid(name, f"at most {max_length} characters")
        return value

    def int(self, name: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        return parse_int(name, self.raw(name), minimum, maximum)

    def bool(self, name: str, default: bool) -> bool:
        return parse_bool(name, self.raw(name), default)

    def list(self, name: str) -> list[str] | None:
        """Repeated parameters, a JSON list, or comma-separated values."""
        result: list[str] = []
        for given in self.values.get(name, []):
            for value in given if isinstance(given, list) else [given]:
                if value in ("", None):
                    continue
                if isinstance(value, (dict, list, bool, float)):
                    raise _invalid(name, "expected strings")
                result.extend(part.strip() for part in f"{value}".split(",") if part.strip())
        return result or None

    def date(self, name: str, end_of_day: bool = False) -> dt.datetime | None:
        value = self.str(name, 64)
        return None if value is None else parse_datetime(name, value, end_of_day)

    def criteria(self, names: tuple[str, ...]) -> Criteria:
        """The filters named (Criteria.LIST, .DELETE, .STATS) from the request."""
        c = Criteria()
        for name in names:
            if name == "id":
                c.ids = self.list("id")
            elif name == "media_type":
                c.media_type = self.str(name, 255)
            elif name == "type":
                c.types = self.list("type")
                unknown = sorted(set(c.types or ()) - set(KINDS))
                if unknown:
                    raise _invalid("type", f"unknown type {unknown[0]!r}: one of {', '.join(KINDS)}")
            elif name == "contexts":
                c.contexts = [*(self.list("contexts") or ()), *(self.list("context") or ())] or None
            elif name in ("date_gte", "date_lte"):
                setattr(c, name, self.date(name, end_of_day=name == "date_lte"))
            elif name in ("size_gte", "size_lte"):
                setattr(c, name, self.int(name, 0))
            else:  # pragma: no cover - a route naming a filter Criteria does not have
                raise ValueError(name)
        return c

    def page(self, sortable: bool = True) -> Page:
        number = self.int("page", 1) or 1
        per_page = self.int("obj_per_page", 1, MAX_PER_PAGE) or DEFAULT_PER_PAGE
        if not sortable:
            return Page(number, per_page)
        order: list[tuple[str, int]] = []
        for item in self.list("order_by") or [("-" if d < 0 else "") + k for k, d in DEFAULT_ORDER]:
            key = item.lstrip("-+")
            if key not in SORT_FIELDS:
                raise Invalid(f"order_by: unknown field {key!r}", fields={"order_by": f"allowed: {', '.join(SORT_FIELDS)}"})
            order.append((key, -1 if item.startswith("-") else 1))
        return Page(number, per_page, order)


def parse_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """An integer (or a decimal string of one) within bounds; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid(name, "expected an integer")
    try:
        number = value if isinstance(value, int) else int(value.strip(), 10)
    except ValueError:
        raise _invalid(name, "expected an integer") from None
    maximum = INT64_MAX if maximum is None else maximum
    if (minimum is not None and number < minimum) or number > maximum:
        bounds = f"between {minimum} and {maximum}" if minimum is not None else f"at most {maximum}"
        raise _invalid(name, f"must be {bounds}")
    return number


def _no_constant(name: str) -> None:
    """NaN and the infinities: Python's json takes them, JSON (and the clients' parsers) do not."""
    raise ValueError(f"{name} is not JSON")


def _storable(value: object, depth: int = 0) -> bool:
    """Can the database store this parsed metadata as it is: text that is UTF-8 (no lone
    surrogates), keys without NUL, at most METADATA_DEPTH levels (MongoDB's limit is 100)?"""
    if depth > METADATA_DEPTH:
        return False
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and "\x00" not in k and _storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v, depth + 1) for v in value)
    return True


METADATA_DEPTH = 32


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, finite (1e400 would be read as inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number beyond a double's range")
    return value


def _int64(text: str) -> int:
    """A JSON integer the database can store (BSON's widest is 64 bits); else ValueError."""
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError("an integer beyond 64 bits")
    return value


METADATA_BYTES = 8192


def parse_metadata(text: str | None) -> dict | None:
    """An upload's `metadata` field: a JSON object of at most 8 KiB that the database can store
    and every client can parse back; else a 400."""
    if not text:
        return None
    try:
        metadata = json.loads(text, parse_int=_int64, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict) or len(text.encode()) > METADATA_BYTES or not _storable(metadata):
        raise Invalid(
            f"metadata: expected a JSON object of at most 8 KiB and {METADATA_DEPTH} levels"
            " (integers of at most 64 bits, no NaN or infinities, text in UTF-8, no NUL in a key)",
            fields={"metadata": "expected a JSON object ≤ 8 KiB"},
        )
    return metadata
