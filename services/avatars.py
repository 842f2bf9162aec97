"""Avatars: an uploaded image made square, upright and metadata-free, with WebP thumbnails.

The upload arrives like any file (streamed to a temp file on the storage volume). The imaging pool
writes the processed avatar to a second temp file; that new content is then committed through the
file manager's one commit path (quota reservation, blob reference under the content's lock, rename
into place, file document), and its thumbnails are made with the blob's other derived images, so
an avatar uploaded twice shares one set. Nothing is stored for an upload that is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from imaging import AVATAR_SIDE, AVATAR_SIZES, Imaging
from services.errors import TooLargeError, Unsupported
from services.files import FileManager, UploadMeta, Written
from storage.content import clean_name, media_type
from storage.ingest import Incoming
from storage.local import BlobStore

log = logging.getLogger("gallery.avatars")


class AvatarManager:
    def __init__(self, files: FileManager, imaging: Imaging, store: BlobStore) -> None:
        self.files = files
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
            fd, out = self.store.new_temp()
            os.close(fd)
            made = await self.imaging.avatar(Path(incoming.path), out, AVATAR_SIDE)
        except BaseException:
            if out is not None:
                out.unlink(missing_ok=True)
            raise
        finally:
            await incoming.discard()
        assert out is not None
        if not made.ok:
            out.unlink(missing_ok=True)
            if made.status == "too_large":
                raise TooLargeError("image has more pixels than allowed")
            raise Unsupported("the image could not be decoded")
        meta.name = with_extension(clean_name(meta.name), made.extension)
        meta.is_avatar = True
        sizes = tuple(s for s in AVATAR_SIZES if s < made.side) if meta.create_thumbnails else ()
        written = Written(out, made.md5, made.sha256, made.size, made.media_type)
        doc = await self.files.commit(owner, written, meta, sizes)
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
