"""Avatars: an uploaded image made square, upright and metadata-free, with WebP thumbnails.

The upload arrives like any file (streamed to a temp file on the storage volume). The imaging pool
writes the processed avatar to a second temp file; that new content is then committed through the
file manager's one commit path (quota reservation, blob reference under the content's lock, rename
into place, file document), and its thumbnails are made with the blob's other derived images, so
an avatar uploaded twice shares one set. Nothing is stored for an upload that is refused.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from imaging import AVATAR_SIDE, AVATAR_SIZES, Imaging
from services.errors import TooLarge, Unsupported
from services.files import FileManager, UploadMeta, Written
from storage import ContentStore
from storage.content import clean_name, media_type
from storage.ingest import Digests, Incoming

log = logging.getLogger("gallery.avatars")


class AvatarManager:
    def __init__(self, file_manager: FileManager, imaging: Imaging, store: ContentStore) -> None:
        self.file_manager = file_manager
        self.imaging = imaging
        self.store = store

    async def store_upload(self, owner: str, incoming: Incoming, meta: UploadMeta) -> dict:
        """Turn a fully received upload into the owner's new avatar (the upload's temp file is
        consumed whatever happens). 415 unless the content is a decodable image; 413 when it has
        more pixels than the decode limit."""
        out: Path | None = None
        try:
            await incoming.finish()
            kind = media_type(bytes(incoming.head), None)  # sniffed; a declared type does not count
            if not kind.startswith("image/"):
                raise Unsupported(f"an avatar must be an image, not {kind}")
            out = await asyncio.to_thread(self.store.staging_file)
            assert incoming.sink is not None
            async with self.store.sink_file(incoming.sink) as source:
                made = await self.imaging.avatar(source, out, AVATAR_SIDE)
        except BaseException:
            if out is not None:
                out.unlink(missing_ok=True)
            raise
        finally:
            await incoming.discard()
        if not made.ok:
            out.unlink(missing_ok=True)
            if made.status == "too_large":
                raise TooLarge(message="image has more pixels than allowed")
            raise Unsupported("the image could not be decoded")
        meta.name = with_extension(clean_name(meta.name), made.extension)
        meta.is_avatar = True
        sizes = tuple(s for s in AVATAR_SIZES if s < made.side) if meta.create_thumbnails else ()
        sink = await self.store.adopt(out)
        written = Written(sink, Digests(made.md5, made.sha1, made.sha256), made.size, made.media_type)
        doc = await self.file_manager.commit(owner, written, meta, sizes)
        log.info("stored avatar", extra={"user": owner, "slot_id": doc["slot_id"], "side": made.side})
        return doc


def with_extension(name: str, extension: str) -> str:
    """The name, with its extension changed when the avatar was written in another format
    (`scan.tiff` -> `scan.png`); JPEG's spellings are all kept."""
    stem, dot, current = name.rpartition(".")
    current = current.lower() if dot and stem else ""
    same = {".jpg": ("jpg", "jpeg", "jpe", "jfif"), ".png": ("png",), ".webp": ("webp",), ".gif": ("gif",)}
    if current in same.get(extension, ()):
        return name
    return (stem if current else name) + extension
