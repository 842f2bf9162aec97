"""PUT|GET <prosody_share.path>/<slot>/<filename>: Prosody's mod_http_file_share, external mode.

Prosody issues the slot and signs the PUT (services/prosody_share.py checks the token as
Prosody's own handler would); the body streams through the same pipeline as files/upload/ and
the file is the uploader's (`sub`), context `message`, with Prosody's `expires` and the
operator's `retention.message` as its expiry. GET and HEAD of the same URL serve the file as
/media/ does. The route exists only when `prosody_share.secret` is set.
"""

from __future__ import annotations

import re
from typing import Any

from handlers.base import BaseHandler
from handlers.files import StreamedUpload
from handlers.media import MediaHandler
from services.errors import Invalid
from services.files import UploadMeta
from services.metrics import Metrics
from services.prosody_share import ShareGrant
from settings import Settings


class ShareHandler(StreamedUpload, MediaHandler):
    """PUT: StreamedUpload's body handling with Prosody's token as the admission; GET, HEAD:
    MediaHandler's serving (its headers on every answer)."""

    grant: ShareGrant | None = None

    def log_line(self) -> str:
        args = getattr(self, "path_args", None)  # unset when Tornado refused the method itself
        slot = args[0] if args else ""
        return f"ProsodyShare slot={slot[:6]}…"

    def options(self, slot: str, name: str) -> None:
        """CORS preflight for web clients (as Prosody's own handler allows)."""
        self.set_header("Access-Control-Allow-Methods", "OPTIONS, HEAD, GET, PUT")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Range")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    async def get(self, slot: str, name: str, include_body: bool = True) -> None:
        await self.serve(slot, None, include_body)  # the slot names the file, as in Prosody

    def content_length(self) -> int | None:
        value = self.request.headers.get("Content-Length")
        if value is not None and not value.strip().isdigit():
            raise Invalid("bad Content-Length")
        return super().content_length()

    async def admit(self) -> None:
        if self.request.method != "PUT":
            return
        slot = self.path_args[0]
        auth = self.request.headers.get("Authorization")
        self.grant, admission = await self.ctx.prosody_share.admit(slot, auth, self.content_length())
        self.open_slot(admission, self.grant.size)

    def feed(self, chunk: bytes) -> None:
        self.feed_slot(chunk)

    async def put(self, slot: str, name: str) -> None:
        incoming = await self.received_slot_body()  # another length: Prosody says 413 too
        if incoming is None:
            return
        grant = self.grant
        assert grant is not None
        meta = UploadMeta(
            name=grant.filename,
            declared_type=grant.content_type,
            context="message",
            slot_id=grant.slot,
            expires_before=grant.expires_before,
        )
        files = self.ctx.files
        doc = await files.store_upload(grant.owner, incoming, meta)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.reply(files.render(doc, await files.quota(grant.owner)), 201)

    def observe(self, metrics: Metrics) -> None:
        if self.request.method == "PUT":
            StreamedUpload.observe(self, metrics)
        else:
            MediaHandler.observe(self, metrics)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.request.method == "PUT":
            StreamedUpload.write_error(self, status_code, **kwargs)
        else:
            BaseHandler.write_error(self, status_code, **kwargs)


def routes(settings: Settings) -> list[tuple[str, Any]]:
    """The share route under `prosody_share.path`, when a secret is set."""
    if not settings.prosody_share.secret:
        return []
    return [(re.escape(settings.prosody_share.path) + r"/([^/]+)/([^/]+)", ShareHandler)]
