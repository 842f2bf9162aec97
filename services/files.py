"""The file manager: the crash-safe storage protocol and every operation on a user's files."""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bson import ObjectId

from imaging import Derived, Imaging
from models.blobs import Blobs
from models.db import utcnow
from models.files import Criteria, Files, Page
from models.users import Quota, Users
from services.errors import NotFound, QuotaExceeded
from services.render import file_object, thumb_name
from storage.content import clean_name, media_type
from storage.ingest import Incoming
from storage.local import BlobStore

log = logging.getLogger("gallery.files")

BUCKETS = (("image/", "images"), ("video/", "videos"), ("audio/", "voices"))


@dataclass
class UploadMeta:
    name: str | None = None
    declared_type: str | None = None
    context: str | None = None
    metadata: dict | None = None
    create_thumbnails: bool = True
    is_avatar: bool = False


@dataclass
class Download:
    """One servable file behind a /media/<slot_id>/<name> URL."""

    path: Path
    media_type: str
    name: str
    etag: str
    last_modified: dt.datetime


@dataclass
class Listing:
    total: int
    page: Page
    items: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "total_pages": math.ceil(self.total / self.page.per_page),
            "total_objects": self.total,
            "obj_per_page": self.page.per_page,
            "page": self.page.number,
            "items": self.items,
        }


class FileManager:
    def __init__(self, files: Files, blobs: Blobs, users: Users, store: BlobStore, imaging: Imaging, public_url: str) -> None:
        self.files = files
        self.blobs = blobs
        self.users = users
        self.store = store
        self.imaging = imaging
        self.public_url = public_url

    def render(self, doc: dict) -> dict:
        return file_object(doc, self.public_url)

    def with_quota(self, obj: dict, quota: Quota) -> dict:
        obj["used"] = quota.used
        obj["quota"] = quota.quota
        return obj

    # -- create -------------------------------------------------------------------------
    async def store_upload(self, owner: str, incoming: Incoming, meta: UploadMeta) -> dict:
        """Commit a fully received upload: reserve quota, reference the blob, insert the file.
        The temp file is consumed (moved into place or removed) whatever happens."""
        size, reserved = incoming.size, False
        try:
            md5, sha256 = await incoming.finish()
            kind = media_type(bytes(incoming.head), meta.declared_type)
            reserved = await self.users.reserve(owner, size)
            if not reserved:
                raise QuotaExceeded()
            derived = await self._reference(sha256, md5, size, kind, incoming, meta.create_thumbnails)
        except BaseException:
            await incoming.discard()
            if reserved:
                await self.users.release(owner, size)
            raise
        doc = self._new_doc(owner, meta.name, sha256, md5, size, kind, derived, meta)
        await self._insert(doc)
        log.info("stored upload", extra={"user": owner, "slot_id": doc["slot_id"], "size": size})
        return doc

    async def link_existing(self, owner: str, existing: dict, name: str | None) -> dict | None:
        """A new file for content the owner already has (slot dedup); None if that content is no
        longer stored."""
        size = existing["size"]
        if not await self.users.reserve(owner, size):
            raise QuotaExceeded()
        sha256 = existing["sha256"]
        async with self.store.locked(sha256):
            before = await self.blobs.acquire(sha256, existing["md5"], size, existing["media_type"])
            if before is None or not self.store.blob_path(sha256).exists():
                await self._drop_reference(sha256, locked=True)
                await self.users.release(owner, size)
                return None
        derived = Derived(existing.get("width"), existing.get("height"), existing.get("thumbnail"))
        meta = UploadMeta(context=existing.get("context"), metadata=existing.get("metadata"))
        doc = self._new_doc(owner, name, sha256, existing["md5"], size, existing["media_type"], derived, meta)
        await self._insert(doc)
        return doc

    async def _reference(self, sha256: str, md5: str, size: int, kind: str, incoming: Incoming, thumbnails: bool) -> Derived:
        async with self.store.locked(sha256):
            before = await self.blobs.acquire(sha256, md5, size, kind)
            await self.store.place(incoming.path, sha256)
            derived = (before or {}).get("derived")
            if derived is None or (thumbnails and derived.get("thumbnail") is None and not derived.get("tried")):
                result = await self.imaging.derive(self.store.blob_path(sha256), kind, self.store.thumb_dir(sha256), thumbnails)
                derived = {**result.as_doc(), "tried": thumbnails}
                await self.blobs.set_meta(sha256, {"derived": derived})
        thumbnail = derived.get("thumbnail") if thumbnails else None
        return Derived(derived.get("width"), derived.get("height"), thumbnail)

    def _new_doc(
        self, owner: str, name: str | None, sha256: str, md5: str, size: int, kind: str, derived: Derived, meta: UploadMeta
    ) -> dict:
        return {
            "_id": ObjectId(),
            "owner": owner,
            "slot_id": secrets.token_urlsafe(18),
            "name": clean_name(name),
            "sha256": sha256,
            "md5": md5,
            "size": size,
            "media_type": kind,
            "is_avatar": meta.is_avatar,
            "context": meta.context,
            "metadata": meta.metadata,
            "thumbnail": derived.thumbnail,
            "width": derived.width,
            "height": derived.height,
            "created_at": utcnow(),
        }

    async def _insert(self, doc: dict) -> None:
        try:
            await self.files.insert(doc)
        except BaseException:
            await self._drop_reference(doc["sha256"])
            await self.users.release(doc["owner"], doc["size"])
            raise

    # -- read ---------------------------------------------------------------------------
    async def get(self, owner: str, file_id: str, is_avatar: bool | None = None) -> dict:
        doc = await self.files.owned(owner, file_id, is_avatar)
        if doc is None:
            raise NotFound()
        return doc

    async def list(self, owner: str, criteria: Criteria, page: Page, is_avatar: bool = False) -> Listing:
        total, docs = await self.files.page(owner, criteria, page, is_avatar)
        return Listing(total, page, [self.render(doc) for doc in docs])

    async def stats(self, owner: str, criteria: Criteria) -> dict:
        buckets = {name: {"count": 0, "used": 0} for name in ("images", "videos", "voices", "files", "avatars", "total")}
        for row in await self.files.usage(owner, criteria):
            if row["is_avatar"]:
                name = "avatars"
            else:
                name = next((b for prefix, b in BUCKETS if row["media_type"].startswith(prefix)), "files")
            for bucket in (name, "total"):
                buckets[bucket]["count"] += row["count"]
                buckets[bucket]["used"] += row["used"]
        quota = await self.users.quota(owner)
        return {**buckets, "quota": quota.quota, "used": quota.used}

    async def download(self, slot_id: str, name: str) -> Download | None:
        """What /media/<slot_id>/<name> serves: the content, or one of its derived images."""
        doc = await self.files.by_slot(slot_id)
        if doc is None:
            return None
        sha256, created = doc["sha256"], doc["created_at"]
        if name == doc["name"]:
            return Download(self.store.blob_path(sha256), doc["media_type"], name, f'"{sha256}"', created)
        thumbnail = doc.get("thumbnail")
        if thumbnail and name == thumb_name(doc["name"]):
            return self._derived(sha256, thumbnail, name, created)
        for variant in doc.get("thumbnails") or ():
            if name == variant["name"]:
                return self._derived(sha256, variant, name, created)
        return None

    def _derived(self, sha256: str, item: dict, name: str, created: dt.datetime) -> Download:
        path = self.store.thumb_dir(sha256) / item["file"]
        return Download(path, item["media_type"], name, f'"{sha256}-{item["file"]}"', created)

    async def find_for_slot(self, owner: str, size: int, digest: str) -> dict | None:
        if len(digest) == 64:
            return await self.files.with_content(owner, size, sha256=digest)
        return await self.files.with_content(owner, size, md5=digest)

    # -- delete -------------------------------------------------------------------------
    async def delete(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> int:
        """Remove the owner's matching files; content whose last reference goes leaves storage."""
        deleted = 0
        for doc in await self.files.matching(owner, criteria, is_avatar):
            if not await self.files.delete(owner, doc["_id"]):
                continue  # a concurrent delete got there first
            deleted += 1
            await self.users.release(owner, doc["size"])
            await self._drop_reference(doc["sha256"])
        return deleted

    async def _drop_reference(self, sha256: str, locked: bool = False) -> None:
        if locked:
            await self._release_blob(sha256)
            return
        async with self.store.locked(sha256):
            await self._release_blob(sha256)

    async def _release_blob(self, sha256: str) -> None:
        if await self.blobs.release(sha256) <= 0 and await self.blobs.delete_unreferenced(sha256):
            await self.store.remove(sha256)
