"""avatar/: upload (made square, upright and metadata-free, with WebP thumbnails), list, delete.

The handlers are files/'s, scoped to avatars: the upload is streamed the same way and only its
commit differs (services/avatars.py); list and delete see avatars only.
"""

from __future__ import annotations

from handlers.files import FilesHandler, UploadHandler
from services.errors import Invalid


class AvatarUploadHandler(UploadHandler):
    """POST avatar/upload/: 201 with the avatar and its thumbnails; 415 not a decodable image,
    413 more pixels than allowed."""

    always_avatar = True


class AvatarsHandler(FilesHandler):
    """GET avatar/ lists the caller's avatars; DELETE avatar/ removes one (by `id`, or by its URL
    as `file`). Files that are not avatars are never seen or touched here."""

    is_avatar = True
    DELETE_BY = ("id",)

    async def delete(self) -> None:
        if self.params.list("id") is None and self.params.str("file", 8192) is None:
            raise Invalid("id is required", fields={"id": "required"})
        await super().delete()
