"""When a file expires: the operator's retention per purpose, and the uploader's own deadline.

A pure function, so that every door (files/upload/, the XEP-0363 component, Prosody's
http_file_share) and the tests agree on one rule: the earliest of the two wins, and neither means
the file is kept until deleted.
"""

from __future__ import annotations

import datetime as dt

from settings import RetentionSettings

# The XEP-0363 purposes, each with a retention setting of its own; every other context (or none)
# falls under `retention.default`.
PURPOSES = ("message", "ephemeral", "profile", "permanent")
ALIASES = {"avatar": "profile"}  # avatars are kept as profile pictures are


def aware(value: dt.datetime) -> dt.datetime:
    """A datetime from the database or a client, in UTC (naive = UTC)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def retention_days(context: str | None, settings: RetentionSettings) -> float:
    """The operator's retention for files of this context, in days (0: until deleted)."""
    name = ALIASES.get(context or "", context)
    return float(getattr(settings, name if name in PURPOSES else "default"))


def expiry_for(
    context: str | None, expires_before: dt.datetime | None, now: dt.datetime, settings: RetentionSettings
) -> dt.datetime | None:
    """The moment a file made `now` stops being served, or None for never.

    `expires_before` is the uploader's deadline (XEP-0363 `<ephemeral expire-before>`, Prosody's
    `expires` claim): the file is never available after it. The retention of `context` adds a
    deadline of its own; the earlier one wins. Stored at MongoDB's millisecond precision, rounded
    down so that the file never outlives either deadline."""
    deadlines = []
    days = retention_days(context, settings)
    if days > 0:
        deadlines.append(now + dt.timedelta(days=days))
    if expires_before is not None:
        deadlines.append(aware(expires_before))
    if not deadlines:
        return None
    earliest = min(deadlines)
    return earliest.replace(microsecond=earliest.microsecond // 1000 * 1000)


def expired(expires_at: dt.datetime | None, now: dt.datetime) -> bool:
    """A file whose `expires_at` has come is no longer served (the sweeper removes it soon)."""
    return expires_at is not None and aware(expires_at) <= now
