"""Content references: correct with any number of processes racing uploads and deletes of the
same bytes, with no lock outside the database (the argument is in docs/architecture.md).

- `acquire` adds a reference to a live blob document, or creates it (one upsert,
  `Blobs.take_ref`); it never adds one to a document marked for deletion: it waits until the
  deleter has removed the content and the document (or, if the deleter stopped, finishes the
  deletion itself), then creates it anew.
- `release` drops a reference; at zero, whoever marks the document first removes the content,
  then the document. Content is removed only by the holder of the marker, while no reference can
  be added; an acquire after that creates a new document and stores the content again.

Whoever holds a reference and has the bytes (an upload) commits them to the store afterwards;
committing is idempotent, so every holder of a new upload does it, not only the creator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets

from models.blobs import Blobs, Taken
from models.db import utcnow
from storage import ContentStore

log = logging.getLogger("gallery.refs")

# A deletion claimed longer ago than this is taken over: its claimant died (or stalled that long
# between its last check and the removal, the one case the protocol does not cover).
DELETE_STALE_SECONDS = 60
POLL_SECONDS = 0.02


class ContentRefs:
    def __init__(self, blobs: Blobs, store: ContentStore, stale: float = DELETE_STALE_SECONDS) -> None:
        self.blobs = blobs
        self.store = store
        self.stale = stale

    async def acquire(self, sha256: str, md5: str, size: int, media_type: str, read: bool = True) -> dict | None:
        """Take one reference. Returns the blob document when the content was known (stored, or
        being stored by another holder), None when this call created the document. `read`: False
        when the caller needs only to know which (then a known content's document is not read:
        `{"_id": sha256}` stands for it). New content costs one command, known content one (two
        with `read`)."""
        while True:
            taken = await self.blobs.take_ref(sha256, md5, size, media_type)
            if taken is Taken.CREATED:
                return None
            if taken is Taken.ADDED:
                if not read:
                    return {"_id": sha256}
                doc = await self.blobs.get(sha256)  # ours to read: a held reference keeps it
                return doc if doc is not None else {"_id": sha256, "refs": 1}
            doc = await self.blobs.get(sha256)
            if doc is None or not doc.get("deleting"):
                continue  # it changed between the two writes: try again
            claimed = doc.get("deleting_at")
            if claimed is not None and utcnow() - claimed > dt.timedelta(seconds=self.stale):
                token = secrets.token_hex(8)
                if await self.blobs.take_over(sha256, doc["deleting"], token):
                    log.warning("finishing a deletion of %s that was left unfinished", sha256)
                    await self._delete(sha256, token)
                continue
            await asyncio.sleep(POLL_SECONDS)  # a deletion in progress: it takes a moment

    async def release(self, sha256: str) -> bool:
        """Drop one reference; True when that was the last and the content left the store."""
        if await self.blobs.release(sha256) > 0:
            return False
        token = secrets.token_hex(8)
        if not await self.blobs.mark_deleting(sha256, token):
            return False  # referenced again meanwhile, or another release is deleting it
        return await self._delete(sha256, token)

    async def forget(self, sha256: str) -> None:
        """Drop one reference, and at zero the document, but never the content: for a reference
        taken on content that files use although its document was missing (a crash; fsck
        recreates it), whose bytes must stay."""
        if await self.blobs.release(sha256) <= 0:
            await self.blobs.delete_unreferenced(sha256)

    async def _delete(self, sha256: str, token: str) -> bool:
        if not await self.blobs.is_marked(sha256, token):
            return False  # taken over by an acquire after we stalled: it deletes
        try:
            await self.store.remove(sha256)
        except Exception:  # the marker stays: the next acquire takes the deletion over when stale
            log.exception("could not remove content %s", sha256)
            return False
        return await self.blobs.delete_marked(sha256, token)
