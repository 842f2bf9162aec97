"""What a request selects and how it pages: the filter names, the orders, the page size.

Parsed from requests by services/params.py; turned into queries by models/files.py only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

# API name -> stored field
SORT_FIELDS = {"id": "_id", "created_at": "created_at", "size": "size", "name": "name", "media_type": "media_type"}
DEFAULT_ORDER = (("created_at", -1),)
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500


@dataclass
class Criteria:
    """What a list, stats or delete request selects among one owner's files. The field names are
    the API's parameter names (`id` arrives as `ids`, a download URL as `slot_id`)."""

    ids: list[str] | None = None
    slot_id: str | None = None
    media_type: str | None = None
    types: list[str] | None = None  # kinds: image, video, audio, voice, file (`type`)
    contexts: list[str] | None = None  # any of them (`contexts`, or repeated `context`)
    date_gte: dt.datetime | None = None
    date_lte: dt.datetime | None = None
    size_gte: int | None = None
    size_lte: int | None = None

    # the filters each route takes, by their parameter names
    LIST = ("id", "media_type", "type", "contexts", "date_gte", "date_lte", "size_gte", "size_lte")
    DELETE = ("id", "media_type", "type", "contexts", "date_gte", "date_lte")
    STATS = ("media_type", "type", "contexts", "date_gte", "date_lte")

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def dates_only(self) -> bool:
        """Nothing but a date range (or nothing at all) is asked for."""
        return Criteria(date_gte=self.date_gte, date_lte=self.date_lte) == self


@dataclass
class Page:
    number: int = 1
    per_page: int = DEFAULT_PER_PAGE
    order: list[tuple[str, int]] = field(default_factory=lambda: list(DEFAULT_ORDER))

    @property
    def skip(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def newest_first(self) -> bool:
        return tuple(self.order) == DEFAULT_ORDER
