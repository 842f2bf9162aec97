"""The file manager: the crash-safe storage protocol and every operation on a user's files."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bson import ObjectId

from imaging import Derived, Imaging
from models.blobs import Blobs
from models.db import utcnow
from models.files import Criteria, Files, Page
from models.users import Quota, Users
from services.errors import NotFound, QuotaExceeded
from services.render import file_object, thumb_name, variant_name
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
class Written:
    """A complete, fsync'd temp file on the storage volume, ready to be committed."""

    path: Path
    md5: str
    sha256: str
    size: int
    media_type: str


@dataclass
class Download:
    """One servable file behind a /media/<slot_id>/<name> URL."""

    path: Path
    media_type: str
    name: str
    etag: str
    last_modified: dt.datetime
    size: int = 0


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
        try:
            md5, sha256 = await incoming.finish()
            kind = media_type(bytes(incoming.head), meta.declared_type)
        except BaseException:
            await incoming.discard()
            raise
        return await self.commit(owner, Written(Path(incoming.path), md5, sha256, incoming.size, kind), meta)

    async def commit(self, owner: str, written: Written, meta: UploadMeta, variants: Sequence[int] = ()) -> dict:
        """Commit a complete, fsync'd temp file on the storage volume (an upload, or content made
        from one, like an avatar): reserve quota, reference the blob, insert the file. The temp file
        is consumed (moved into place or removed) whatever happens. `variants`: the sides of the
        square WebP images (avatar thumbnails) to make with the blob's derived images."""
        size, reserved = written.size, False
        try:
            reserved = await self.users.reserve(owner, size)
            if not reserved:
                raise QuotaExceeded()
            derived = await self._reference(written, meta.create_thumbnails, variants)
        except BaseException:
            written.path.unlink(missing_ok=True)
            if reserved:
                await self.users.release(owner, size)
            raise
        doc = self._new_doc(owner, meta.name, written.sha256, written.md5, size, written.media_type, derived, meta)
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

    async def _reference(self, written: Written, thumbnails: bool, variants: Sequence[int] = ()) -> Derived:
        """Reference the blob (placing the temp file if the content is new) and return its derived
        images, made once per content (in the imaging pool) and shared by every file that has it."""
        sha256 = written.sha256
        async with self.store.locked(sha256):
            before = await self.blobs.acquire(sha256, written.md5, written.size, written.media_type)
            await self.store.place(written.path, sha256)
            derived = (before or {}).get("derived")
            old = derived or {}
            want_thumb = thumbnails and old.get("thumbnail") is None and not old.get("tried")
            want_variants = bool(variants) and old.get("variants") is None
            if derived is None or want_thumb or want_variants:
                thumb = thumbnails or bool(old.get("tried"))  # keep what an earlier upload asked for
                sizes = tuple(variants) or tuple(v["size"] for v in old.get("variants") or ())
                path, out_dir = self.store.blob_path(sha256), self.store.thumb_dir(sha256)
                result = await self.imaging.derive(path, written.media_type, out_dir, thumb, sizes)
                derived = {**result.as_doc(), "tried": thumb}
                # Nothing learnt about new content the imaging never looks at (neither an image
                # nor a video): no need to remember it, and one write less for most uploads.
                if before is not None or result != Derived() or written.media_type.startswith(("image/", "video/")):
                    await self.blobs.set_meta(sha256, {"derived": derived})
        thumbnail = derived.get("thumbnail") if thumbnails else None
        made = derived.get("variants") if variants else None
        return Derived(derived.get("width"), derived.get("height"), thumbnail, made)

    def _new_doc(
        self, owner: str, name: str | None, sha256: str, md5: str, size: int, kind: str, derived: Derived, meta: UploadMeta
    ) -> dict:
        doc = {
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
        if meta.is_avatar:  # the avatar's WebP thumbnails, named after this file
            doc["thumbnails"] = [{**v, "name": variant_name(v["size"], doc["name"])} for v in derived.variants or ()]
        return doc

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
        if criteria == Criteria():  # unfiltered: the owner's counters and quota, two point reads
            counts, quota = await asyncio.gather(self.files.counts(owner), self.users.quota(owner))
            total = {key: sum(bucket[key] for bucket in counts.values()) for key in ("count", "used")}
            return {**counts, "total": total, "quota": quota.quota, "used": quota.used}
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
        """What /media/<slot_id>/<name> serves, with its size on the volume; None when the link
        or the stored file does not exist."""
        found = await self._find_download(slot_id, name)
        if found is None:
            return None
        size = await self.store.size(found.path)
        if size is None:
            return None
        found.size = size
        return found

    async def _find_download(self, slot_id: str, name: str) -> Download | None:
        """The content behind the link, or one of its derived images."""
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
