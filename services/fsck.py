"""fsck: make the database and the blob store agree again after a crash.

`files` is the source of truth: blob reference counts, each user's `used` and each owner's file
counters (count and bytes per stats bucket) are recomputed from it; blobs and derived images
nobody references, and stale temp files, are removed. Files whose `expires_at` has passed are
removed first (what the expiry sweeper would have done while the service was down), so that the
recount gives their quota back and their unreferenced content leaves the volume. Content that a
file points at but that is missing from the volume cannot be repaired and is reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import aclosing
from dataclasses import dataclass, field

from models.db import utcnow
from models.files import Files
from services.context import Parts
from storage import ContentStore

log = logging.getLogger("gallery.fsck")

STALE_TEMP_SECONDS = 3600
EXPIRED_BATCH = 500


@dataclass
class Report:
    temps_removed: int = 0
    expired_removed: int = 0
    refs_fixed: int = 0
    blob_docs_added: int = 0
    blob_docs_removed: int = 0
    blob_files_removed: int = 0
    thumb_dirs_removed: int = 0
    used_fixed: int = 0
    slots_ended: int = 0
    ids_given: int = 0
    sha1_added: int = 0  # contents whose files had no sha1 (stored before it was computed)
    counts_fixed: int = 0
    missing_content: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return not self.missing_content

    def lines(self) -> list[str]:
        out = [f"{name.replace('_', ' ')}: {value}" for name, value in vars(self).items() if isinstance(value, int)]
        for sha256 in self.missing_content:
            out.append(f"MISSING content {sha256}: referenced by files but not on the volume")
        return out


async def _sha1(store: ContentStore, sha256: str) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    size = await store.size(sha256) or 0
    async with aclosing(store.read(sha256, 0, size)) as chunks:
        async for view in chunks:
            await asyncio.to_thread(digest.update, view)
    return digest.hexdigest()


async def fsck(parts: Parts, temp_age: float = STALE_TEMP_SECONDS) -> Report:
    files, blobs, users, store = parts.files, parts.blobs, parts.users, parts.store
    report = Report()
    report.ids_given = await files.migrate(parts.file_ids)
    report.temps_removed = await store.clean_staging(temp_age)
    report.expired_removed = await _remove_expired(files)

    wanted = await files.refs_by_blob()
    known = {doc["_id"]: doc.get("refs", 0) for doc in await blobs.all()}
    on_disk = await store.contents()
    for sha256, sample in wanted.items():
        refs = sample["n"]
        if sha256 not in known:
            await blobs.insert(
                {
                    "_id": sha256,
                    "md5": sample["md5"],
                    "size": sample["size"],
                    "media_type": sample["media_type"],
                    "refs": refs,
                    "created_at": utcnow(),
                }
            )
            report.blob_docs_added += 1
        elif known[sha256] != refs:
            await blobs.set_refs(sha256, refs)
            report.refs_fixed += 1
        if sha256 not in on_disk:
            report.missing_content.append(sha256)
    for sha256 in known.keys() - wanted.keys():
        await blobs.set_refs(sha256, 0)
        if await blobs.delete_unreferenced(sha256):
            report.blob_docs_removed += 1
    for sha256 in on_disk - wanted.keys():
        await store.remove(sha256)
        report.blob_files_removed += 1
    for sha256 in await store.derived_contents() - wanted.keys():
        await store.remove(sha256)
        report.thumb_dirs_removed += 1

    for sha256, ids in (await files.lacking_sha1()).items():
        if sha256 in on_disk:
            await files.set_sha1(ids, await _sha1(store, sha256))
            report.sha1_added += 1

    totals = await files.totals_by_owner()
    # XEP-0363 slots still issued hold their size in `used`; those whose time is up end here
    report.slots_ended = await parts.slots.end_expired(utcnow())
    reserved = await parts.slots.reserved_by_owner()
    for jid in await users.all_ids():
        if await users.set_used(jid, totals.get(jid, 0) + reserved.get(jid, 0)):
            report.used_fixed += 1
    report.counts_fixed = await files.recount()
    return report


async def _remove_expired(files: Files) -> int:
    """Delete the documents of expired files; the passes after this recount quota, counters and
    references without them and remove the content nobody references any more."""
    removed, now = 0, utcnow()
    while True:
        docs = await files.expired(now, EXPIRED_BATCH)
        for doc in docs:
            if await files.delete(doc["owner"], doc["_id"]):
                removed += 1
        if len(docs) < EXPIRED_BATCH:
            return removed
