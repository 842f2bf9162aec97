"""The file manager: upload admission, the crash-safe storage protocol, and every operation on a
user's files. Every route that takes an upload (REST today, XEP-0363 PUTs, resumable uploads)
asks `admit` first and stores through `store_upload`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from imaging import Derived, Imaging
from models.blobs import Blobs
from models.criteria import Criteria, Page
from models.db import utcnow
from models.files import Files, SlotTaken, kind_of
from models.leases import Leases
from models.ratelimits import RateLimits
from models.sequences import IdSequence
from models.users import Quota, Users
from services import render
from services.admission import UploadGate
from services.errors import Conflict, NotFound, QuotaExceeded, RateLimited, TooLarge
from services.refs import ContentRefs
from services.retention import aware, expiry_for
from settings import LimitsSettings, RetentionSettings
from storage import ContentStore, Sink
from storage.content import clean_name, media_type
from storage.ingest import Digests, Incoming, Overflow

__all__ = ["Admission", "Download", "FileManager", "Incoming", "Overflow", "UploadMeta"]

log = logging.getLogger("gallery.files")

ROOM_SCAN = 1000  # an owner's soonest-expiring files room_at looks at


@dataclass
class UploadMeta:
    name: str | None = None
    declared_type: str | None = None
    context: str | None = None
    metadata: dict | None = None
    create_thumbnails: bool = True
    is_avatar: bool = False
    # the uploader's deadline (XEP-0363 <ephemeral expire-before>, Prosody's `expires`): the file
    # is never served after it
    expires_before: dt.datetime | None = None
    slot_id: str | None = None  # the link's id when the upload's door chose it (Prosody's slot)


@dataclass
class Written:
    """Complete, durable bytes in a sink of the store, ready to be committed."""

    sink: Sink
    digests: Digests
    size: int
    media_type: str


@dataclass
class Download:
    """One servable file behind a /media/<slot_id>/<name> URL: content, or a derived image."""

    sha256: str
    derived: str | None  # the derived image's name in the store; None: the content itself
    media_type: str
    name: str
    etag: str
    last_modified: dt.datetime
    size: int = 0


@dataclass
class Admission:
    """An upload allowed to start: at most `limit` bytes. `close()` when the request ends."""

    owner: str
    limit: int
    quota: Quota
    gate: UploadGate | None  # None: no place held in the gate (an XEP-0363 slot being promised)

    def __post_init__(self) -> None:
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            if self.gate is not None:
                self.gate.leave(self.owner)


def context_of(meta: UploadMeta) -> str | None:
    """An avatar's context is `avatar`; a file declared `…+voice` (Xabber web's voice messages:
    `audio/ogg; codecs=opus+voice`) and given no context is a `voice`."""
    if meta.is_avatar:
        return "avatar"
    if meta.context is None and "+voice" in (meta.declared_type or ""):
        return "voice"
    return meta.context


class FileManager:
    def __init__(
        self,
        files: Files,
        blobs: Blobs,
        users: Users,
        ratelimits: RateLimits,
        ids: IdSequence,
        leases: Leases,
        store: ContentStore,
        imaging: Imaging,
        limits: LimitsSettings,
        public_url: str,
        retention: RetentionSettings | None = None,
    ) -> None:
        self._files = files
        self._blobs = blobs
        self._users = users
        self._ratelimits = ratelimits
        self._ids = ids
        self.store = store
        self.imaging = imaging
        self.limits = limits
        self.public_url = public_url
        self.retention = retention or RetentionSettings()
        self.gate = UploadGate(leases, limits.concurrent_uploads_per_user, limits.concurrent_uploads)
        self._refs = ContentRefs(blobs, store)

    # -- answers ---------------------------------------------------------------------------
    def render(self, doc: dict, quota: Quota | None = None) -> dict:
        obj = render.file_object(doc, self.public_url)
        if quota is not None:
            obj.update(render.quota(quota, available=False))
        return obj

    async def quota(self, owner: str) -> Quota:
        return await self._users.quota(owner)

    # -- admission -------------------------------------------------------------------------
    def check_size(self, size: int | None) -> None:
        if size is not None and size > self.limits.max_file_size:
            raise TooLarge(self.limits.max_file_size)

    async def admit(
        self,
        owner: str,
        *,
        length: int | None = None,
        declared: int | None = None,
        slack: int = 0,
        count: bool = True,
        hold: bool = True,
    ) -> Admission:
        """May `owner` start an upload now? `length`: the request body's size when known
        (`slack` of it is framing), `declared`: the file's size when the client said it; `count`:
        False when the upload was counted against the rate limit already (an XEP-0363 slot's PUT);
        `hold`: False when no bytes come now, so no place in the concurrent-upload gate is taken
        (an XEP-0363 slot request). Refuses with 413 (too large), 403 (quota), 429 (rate limit, or
        too many of theirs at once) or 503 (too many uploads at once)."""
        gate = self.gate if hold else None
        if gate is not None:
            await gate.enter(owner)  # leases shared by every process (services/admission.py)
        try:
            self.check_size(declared)
            self.check_size(None if length is None else length - slack)
            quota = await self._users.quota(owner)
            if (length is not None and length - slack > quota.available) or (declared or 0) > quota.available:
                raise QuotaExceeded()
            if count:
                wait = await self._ratelimits.hit(f"upload:{owner}", self.limits.uploads_per_window, self.limits.upload_window)
                if wait is not None:
                    raise RateLimited("too many uploads", wait)
        except BaseException:
            if gate is not None:
                gate.leave(owner)
            raise
        return Admission(owner, min(self.limits.max_file_size, quota.available), quota, gate)

    def overflow(self, received: int) -> TooLarge | QuotaExceeded:
        """What to answer when an upload's bytes pass its admission's limit."""
        return TooLarge(self.limits.max_file_size) if received > self.limits.max_file_size else QuotaExceeded()

    def incoming(self, admission: Admission) -> Incoming:
        """Where the admitted upload's bytes go."""
        return Incoming(self.store, admission.limit)

    async def slot(self, owner: str, digest: str, size: int, name: str | None) -> dict:
        """files/slot/: may `owner` upload this? When they already own that content, a new file
        for it is made without an upload and answered; else the quota (the client uploads)."""
        self.check_size(size)
        existing = await self._files.with_content(owner, size, digest)
        if existing is not None:
            # The reservation is the quota check (403 when the size does not fit, the rule the
            # read below applies): no quota read before it.
            doc = await self._link_existing(owner, existing, name)
            if doc is not None:
                return self.render(doc, await self._users.quota(owner))
        quota = await self._users.quota(owner)
        if size > quota.available:
            raise QuotaExceeded()
        return render.quota(quota, available=False)

    # -- create ----------------------------------------------------------------------------
    async def store_upload(self, owner: str, incoming: Incoming, meta: UploadMeta) -> dict:
        """Commit a fully received upload: reserve quota, reference the content, insert the file.
        The upload's bytes are consumed (kept or dropped) whatever happens."""
        try:
            digests = await incoming.finish()
            kind = media_type(bytes(incoming.head), meta.declared_type)
        except BaseException:
            await incoming.discard()
            raise
        assert incoming.sink is not None
        return await self.commit(owner, Written(incoming.sink, digests, incoming.size, kind), meta)

    async def commit(self, owner: str, written: Written, meta: UploadMeta, variants: Sequence[int] = ()) -> dict:
        """Commit complete, durable bytes (an upload, or content made from one, like an avatar):
        reserve quota, reference the content, insert the file. The sink is consumed whatever
        happens. `variants`: the sides of the square WebP images (avatar thumbnails) to make
        with the content's derived images."""
        size, reserved = written.size, False
        try:
            file_id = await self._ids.next()  # before anything is held: a failure here holds nothing
            reserved = await self._users.reserve(owner, size)
            if not reserved:
                raise QuotaExceeded()
            derived = await self._reference(written, meta.create_thumbnails, variants)
        except BaseException:
            await asyncio.to_thread(written.sink.discard)
            if reserved:
                await self._users.release(owner, size)
            raise
        doc = self._new_doc(file_id, owner, meta.name, written.digests, size, written.media_type, derived, meta)
        await self._insert(doc)
        log.info("stored upload", extra={"user": owner, "slot_id": doc["slot_id"], "size": size})
        return doc

    async def _link_existing(self, owner: str, existing: dict, name: str | None) -> dict | None:
        """A new file for content the owner already has (slot dedup); None if that content is no
        longer stored."""
        size = existing["size"]
        file_id = await self._ids.next()  # before anything is held
        if not await self._users.reserve(owner, size):
            raise QuotaExceeded()
        sha256 = existing["sha256"]
        try:
            # (only whether the blob document existed matters here: its fields are not read)
            before = await self._refs.acquire(sha256, existing["md5"], size, existing["media_type"], read=False)
        except BaseException:
            await self._users.release(owner, size)
            raise
        if before is None or await self.store.size(sha256) is None:  # not stored (yet, or any more)
            if before is None:
                # No blob document although a file has the content (fsck recreates it): give
                # back the reference just made without removing bytes that file still needs.
                await self._refs.forget(sha256)
            else:
                await self._refs.release(sha256)
            await self._users.release(owner, size)
            return None
        derived = Derived(existing.get("width"), existing.get("height"), existing.get("thumbnail"))
        meta = UploadMeta(context=existing.get("context"), metadata=existing.get("metadata"))
        digests = Digests(existing["md5"], existing.get("sha1", ""), sha256)
        doc = self._new_doc(file_id, owner, name, digests, size, existing["media_type"], derived, meta)
        await self._insert(doc)
        return doc

    async def _reference(self, written: Written, thumbnails: bool, variants: Sequence[int] = ()) -> Derived:
        """Reference the content (keeping the new bytes if it is new) and return its derived
        images, made once per content (in the imaging pool) and shared by every file that has it."""
        sha256 = written.digests.sha256
        # No lock: the reference protocol is held by the database (services/refs.py), so this is
        # correct with any number of processes racing uploads and deletes of the same bytes.
        before = await self._refs.acquire(sha256, written.digests.md5, written.size, written.media_type)
        try:
            return await self._keep(written, before, thumbnails, variants)
        except BaseException:  # the bytes were not kept (volume full, imaging): give the reference back
            await asyncio.shield(self._refs.release(sha256))
            raise

    async def _keep(self, written: Written, before: dict | None, thumbnails: bool, variants: Sequence[int]) -> Derived:
        """With the content's reference taken: keep the bytes (every holder commits: idempotent),
        make the derived images the content lacks."""
        sha256 = written.digests.sha256
        await self.store.commit(written.sink, sha256)
        derived = (before or {}).get("derived")
        old = derived or {}
        want_thumb = thumbnails and old.get("thumbnail") is None and not old.get("tried")
        want_variants = bool(variants) and old.get("variants") is None
        if derived is None or want_thumb or want_variants:
            thumb = thumbnails or bool(old.get("tried"))  # keep what an earlier upload asked for
            sizes = tuple(variants) or tuple(v["size"] for v in old.get("variants") or ())
            result = await self._derive(sha256, written.media_type, thumb, sizes)
            derived = {**result.as_doc(), "tried": thumb}
            # Nothing learnt about new content the imaging never looks at (neither an image
            # nor a video): no need to remember it, and one write less for most uploads.
            if before is not None or result != Derived() or written.media_type.startswith(("image/", "video/")):
                await self._blobs.set_meta(sha256, {"derived": derived})
        thumbnail = derived.get("thumbnail") if thumbnails else None
        made = derived.get("variants") if variants else None
        return Derived(derived.get("width"), derived.get("height"), thumbnail, made)

    async def _derive(self, sha256: str, kind: str, thumbnail: bool, variants: Sequence[int]) -> Derived:
        """Have the imaging make the content's derived images in a staging directory, then put
        each into the store."""
        if not kind.startswith(("image/", "video/")):
            return Derived()  # nothing the imaging looks at
        out = await asyncio.to_thread(self.store.staging_dir)
        try:
            async with self.store.local_copy(sha256) as source:
                result = await self.imaging.derive(source, kind, out, thumbnail, variants)
            for item in [result.thumbnail, *(result.variants or ())]:
                if item:
                    await self.store.put_derived(sha256, item["file"], out / item["file"])
        finally:
            await asyncio.to_thread(shutil.rmtree, out, True)
        return result

    def _new_doc(
        self,
        file_id: int,
        owner: str,
        name: str | None,
        digests: Digests,
        size: int,
        kind: str,
        derived: Derived,
        meta: UploadMeta,
    ) -> dict:
        context = context_of(meta)
        now = utcnow()
        doc = {
            "_id": file_id,
            "owner": owner,
            "slot_id": meta.slot_id or secrets.token_urlsafe(18),
            "name": clean_name(name),
            "sha256": digests.sha256,
            "md5": digests.md5,
            "size": size,
            "media_type": kind,
            "kind": kind_of(kind, context),
            "is_avatar": meta.is_avatar,
            "context": context,
            "metadata": meta.metadata,
            "thumbnail": derived.thumbnail,
            "width": derived.width,
            "height": derived.height,
            "created_at": now,
            "expires_at": expiry_for(context, meta.expires_before, now, self.retention),
        }
        if digests.sha1:
            doc["sha1"] = digests.sha1
        if meta.is_avatar:  # the avatar's WebP thumbnails, named after this file
            doc["thumbnails"] = [{**v, "name": render.variant_name(v["size"], doc["name"])} for v in derived.variants or ()]
        return doc

    async def _insert(self, doc: dict) -> None:
        try:
            await self._files.insert(doc)
        except BaseException as exc:
            await self._drop_reference(doc["sha256"])
            await self._users.release(doc["owner"], doc["size"])
            if isinstance(exc, SlotTaken):  # a door that chose the slot_id got two uploads for it
                raise Conflict("this slot has been uploaded already") from None
            raise

    # -- read ------------------------------------------------------------------------------
    async def list(
        self, owner: str, criteria: Criteria, page: Page, is_avatar: bool | None = False, known: dict | None = None
    ) -> dict:
        total, docs = await self._files.page(owner, criteria, page, is_avatar, known)
        return render.listing(total, page, [self.render(doc) for doc in docs])

    async def stats(self, owner: str, criteria: Criteria) -> dict:
        # unfiltered: the owner's counters and quota, two point reads
        count = self._files.counts(owner) if criteria.empty else self._files.usage(owner, criteria)
        counts, quota = await asyncio.gather(count, self._users.quota(owner))
        total = {key: sum(bucket[key] for bucket in counts.values()) for key in ("count", "used")}
        return {**counts, "total": total, **render.quota(quota, available=False)}

    async def download(self, slot_id: str, name: str | None) -> Download | None:
        """What /media/<slot_id>/<name> serves, with its stored size; None when the link or the
        stored bytes do not exist, or the file has expired. `name` None: the file itself, under
        whatever name the URL gives it (Prosody's share URLs)."""
        found = await self._find_download(slot_id, name)
        if found is None:
            return None
        size = await self.store.size(found.sha256, found.derived)
        if size is None:
            return None
        found.size = size
        return found

    async def _find_download(self, slot_id: str, name: str) -> Download | None:
        """The content behind the link, or one of its derived images."""
        doc = await self._files.by_slot(slot_id)
        if doc is None:
            return None
        sha256, created = doc["sha256"], doc["created_at"]
        if name is None or name == doc["name"]:
            return Download(sha256, None, doc["media_type"], doc["name"], f'"{sha256}"', created)
        thumbnail = doc.get("thumbnail")
        if thumbnail and name == render.thumb_name(doc["name"]):
            return self._derived(sha256, thumbnail, name, created)
        for variant in doc.get("thumbnails") or ():
            if name == variant["name"]:
                return self._derived(sha256, variant, name, created)
        return None

    @staticmethod
    def _derived(sha256: str, item: dict, name: str, created: dt.datetime) -> Download:
        return Download(sha256, item["file"], item["media_type"], name, f'"{sha256}-{item["file"]}"', created)

    def read(self, found: Download, start: int, length: int) -> AsyncIterator[memoryview]:
        return self.store.read(found.sha256, start, length, found.derived)

    def accel_path(self, found: Download) -> str | None:
        return self.store.accel_path(found.sha256, found.derived)

    async def oldest(self, owner: str, percent: int, contexts: list[str] | None, known: dict | None = None) -> Criteria:
        """files/percent/<n>/: the owner's oldest files (avatars only when `contexts` names them)
        whose sizes together first reach `percent` % of the space they use (their counters' bytes:
        their quota's `used` also holds pending slot reservations), as criteria among the owner's
        files other than avatars (`is_avatar=False`: the contexts bring them in). `known`: what
        the counters read gather, for a page of the selection (`oldest_page`)."""
        return await self._files.oldest_reaching(owner, Criteria(contexts=contexts), False, percent=percent, known=known)

    async def oldest_page(self, owner: str, percent: int, contexts: list[str] | None, page: Page) -> dict:
        """GET files/percent/<n>/: a page of `oldest`, the counter documents read for the
        selection not read again for its page."""
        known: dict = {}
        criteria = await self.oldest(owner, percent, contexts, known)
        return await self.list(owner, criteria, page, False, known)

    async def delete_oldest(self, owner: str, percent: int, contexts: list[str] | None) -> dict:
        """DELETE files/percent/<n>/: `oldest`, up to this moment (a selection that never reaches
        n % is all of it: files uploaded while the delete runs are not in it)."""
        criteria = await self.oldest(owner, percent, contexts)
        if criteria.ids is None and criteria.date_lte is None:  # the whole selection
            criteria = replace(criteria, date_lte=utcnow())
        return await self.delete_answer(owner, criteria, False)

    # -- delete ----------------------------------------------------------------------------
    async def delete_answer(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> dict:
        """DELETE files/ and its kin: what was deleted and the quota after; 404 if nothing was."""
        deleted = await self.delete(owner, criteria, is_avatar) if criteria.ids != [] else 0
        if not deleted:
            raise NotFound("no matching file")
        return {"deleted": deleted, **render.quota(await self._users.quota(owner), available=False)}

    async def delete(self, owner: str, criteria: Criteria, is_avatar: bool | None) -> int:
        """Remove the owner's matching files; content whose last reference goes leaves storage."""
        deleted = 0
        for doc in await self._files.matching(owner, criteria, is_avatar):
            deleted += await self.remove(doc)
        return deleted

    async def remove(self, doc: dict) -> bool:
        """Remove one file (`owner`, `_id`, `size`, `sha256`): its document, its quota, its
        reference to the content (the last one takes the content and its derived images). Only
        the call whose delete removed the document releases anything, so concurrent removals of
        one file (a user's delete, the expiry sweepers of several processes) release it once."""
        if not await self._files.delete(doc["owner"], doc["_id"]):
            return False  # a concurrent delete got there first
        await self._users.release(doc["owner"], doc["size"])
        await self._drop_reference(doc["sha256"])
        return True

    async def expired(self, now: dt.datetime, limit: int) -> list[dict]:
        """Up to `limit` files whose `expires_at` has come (for the expiry sweeper)."""
        return await self._files.expired(now, limit)

    async def room_at(
        self,
        owner: str,
        needed: int,
        pending: Sequence[tuple[dt.datetime, int]] = (),
        quota: Quota | None = None,
    ) -> dt.datetime | None:
        """When `owner` will have `needed` bytes free, for a "retry at" answer (XEP-0363's
        `<retry stamp>`): `now` when they have the room already; else the moment the owner's
        expiring files (removed by the sweeper at most `retention.sweep_interval` after their
        `expires_at`) and the other reservations in `pending` ((when, bytes) released at that
        moment, such as issued XEP-0363 slots) have given back enough, rounded up to a whole
        second; None when nothing that expires frees enough (or `needed` exceeds the quota)."""
        quota = quota or await self._users.quota(owner)
        now = utcnow()
        short = quota.used + needed - quota.quota
        if short <= 0:
            return now
        if needed > quota.quota:
            return None
        sweep = dt.timedelta(seconds=self.retention.sweep_interval)
        files = [(aware(d["expires_at"]) + sweep, d["size"]) for d in await self._files.expiring(owner, now, ROOM_SCAN)]
        freed = 0
        for when, amount in sorted([(aware(when), amount) for when, amount in pending] + files):
            freed += amount
            if freed >= short:
                moment = max(when, now)
                return moment.replace(microsecond=0) + dt.timedelta(seconds=1) if moment.microsecond else moment
        return None

    async def slot_taken(self, slot_id: str) -> bool:
        return await self._files.slot_taken(slot_id)

    async def _drop_reference(self, sha256: str) -> None:
        await self._refs.release(sha256)
