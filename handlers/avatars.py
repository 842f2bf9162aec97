"""avatar/: upload (made square, upright and metadata-free, with WebP thumbnails), list, delete.

The handlers are files/'s, scoped to avatars: the upload is streamed the same way and only its
commit differs (services/avatars.py); list and delete see avatars only.
"""

from __future__ import annotations

from handlers.files import FilesHandler, UploadHandler
from services.errors import Invalid
from services.files import UploadMeta
from storage.ingest import Incoming


class AvatarUploadHandler(UploadHandler):
    """POST avatar/upload/: 201 with the avatar and its thumbnails; 415 not a decodable image,
    413 more pixels than allowed."""

    is_avatar = True

    async def store(self, incoming: Incoming, meta: UploadMeta) -> dict:
        return await self.ctx.avatars.store_upload(self.owner, incoming, meta)


class AvatarsHandler(FilesHandler):
    """GET avatar/ lists the caller's avatars; DELETE avatar/ removes one (by `id`, or by its URL
    as `file`). Files that are not avatars are never seen or touched here."""

    is_avatar = True
    DELETE_BY = ("id",)

    async def delete(self) -> None:
        if self.list_param("id") is None and self.str_param("file", 8192) is None:
            raise Invalid("id is required", fields={"id": "required"})
        await super().delete()
