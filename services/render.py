"""How stored objects look in API responses: one renderer per resource."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any
from urllib.parse import quote

from models.criteria import Page
from models.files import plain
from models.users import Quota


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    elif value.utcoffset():
        value = value.astimezone(dt.UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# what `quote(name, safe="")` leaves as it is: a name of only these needs no quoting (most do)
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def media_url(public_url: str, slot_id: str, name: str) -> str:
    return f"{public_url}/media/{slot_id}/{name if _UNRESERVED.fullmatch(name) else quote(name, safe='')}"


def thumb_name(name: str) -> str:
    return f"thumb_{name}"


def variant_name(size: int, name: str) -> str:
    """An avatar thumbnail's name: `selfie_avatar.png` -> `48_selfie_avatar.webp`."""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{size}_{stem}.webp"


def quota(q: Quota, *, available: bool = True, jid: str | None = None) -> dict[str, Any]:
    """The quota's shape wherever an answer carries it."""
    body: dict[str, Any] = {} if jid is None else {"jid": jid}
    body.update(quota=q.quota, used=q.used)
    if available:
        body["available"] = q.available
    return body


def listing(total: int, page: Page, items: list[dict]) -> dict[str, Any]:
    """One page of a paginated resource."""
    return {
        "total_pages": math.ceil(total / page.per_page),
        "total_objects": total,
        "obj_per_page": page.per_page,
        "page": page.number,
        "items": items,
    }


def file_object(doc: dict, public_url: str) -> dict:
    thumbnail = doc.get("thumbnail")
    obj = {
        "id": doc["_id"],
        "size": doc["size"],
        "media_type": doc["media_type"],
        "name": doc["name"],
        "slot_id": doc["slot_id"],
        "file": media_url(public_url, doc["slot_id"], doc["name"]),
        "created_at": iso(doc["created_at"]),
        "expires_at": iso(doc.get("expires_at")),  # null: kept until deleted
        "hash": doc["md5"],
        "sha256": doc["sha256"],
        "thumbnail": None,
        "context": doc.get("context"),
        "metadata": plain(doc.get("metadata")),
    }
    if thumbnail:
        obj["thumbnail"] = {
            "url": media_url(public_url, doc["slot_id"], thumb_name(doc["name"])),
            "width": thumbnail["width"],
            "height": thumbnail["height"],
        }
    if doc.get("width") is not None:
        obj["width"] = doc["width"]
        obj["height"] = doc["height"]
    if doc.get("is_avatar"):
        obj["is_avatar"] = True
    obj["thumbnails"] = [
        {"url": media_url(public_url, doc["slot_id"], t["name"]), "width": t["width"], "height": t["height"]}
        for t in doc.get("thumbnails") or ()
    ]
    return obj
