"""files/: slot, streaming upload, list, delete, stats."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget
from tornado.web import stream_request_body

from handlers.base import BaseHandler
from services.errors import (
    InsufficientStorage,
    Invalid,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServiceError,
    TooLargeError,
    Unsupported,
)
from services.files import UploadMeta
from services.metrics import Metrics
from storage.ingest import Incoming, TooLarge, WriteFailed

# Room for the multipart framing and the small fields around the file part.
MULTIPART_SLACK = 64 * 1024
FIELD_LIMIT = 16 * 1024
# A rejected request whose body is at most this large is read to the end before the error is sent,
# so the client sees the answer instead of a reset; a larger one is answered at once and cut off.
DRAIN_LIMIT = 1 << 20
_DIGEST = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")


class FieldTarget(BaseTarget):
    """A small form field, kept in memory up to FIELD_LIMIT bytes."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.chunks: list[bytes] = []
        self.size = 0

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > FIELD_LIMIT:
            raise Invalid(f"{self.name}: too long", fields={self.name: "too long"})
        self.chunks.append(chunk)

    @property
    def value(self) -> str | None:
        if not self._started:
            return None
        try:
            return b"".join(self.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{self.name}: not UTF-8", fields={self.name: "not UTF-8"}) from None


class SizeTarget(FieldTarget):
    """The declared `size`: checked against the limit as soon as it has arrived, before the file."""

    def __init__(self, limit: int, available: int) -> None:
        super().__init__("size")
        self.limit = limit
        self.available = available

    def on_finish(self) -> None:
        value = (self.value or "").strip()
        if not value.isdigit():
            raise Invalid("size: expected an integer", fields={"size": "expected an integer"})
        if int(value) > self.limit:
            raise TooLargeError(f"file too large: at most {self.limit} bytes")
        if int(value) > self.available:
            raise QuotaExceeded()


class FileTarget(BaseTarget):
    """The `file` part, fed straight into the temp file."""

    def __init__(self, incoming: Incoming) -> None:
        super().__init__()
        self.incoming = incoming
        self.parts = 0

    def on_start(self) -> None:
        self.parts += 1
        if self.parts > 1:
            raise Invalid("only one file part is allowed", fields={"file": "only one file part is allowed"})

    def on_data_received(self, chunk: bytes) -> None:
        self.incoming.feed(chunk)


@stream_request_body
class UploadHandler(BaseHandler):
    """POST files/upload/: multipart streamed to disk, hashed on the way, committed atomically."""

    auth = True
    is_avatar = False
    FIELDS = ("media_type", "size", "create_thumbnails", "metadata", "context")

    incoming: Incoming | None = None
    failure: ServiceError | None = None
    drained = 0
    gated = False  # counted by the upload gate until the request ends
    received = False  # the whole body has arrived; the temp file is post()'s

    async def prepare(self) -> None:
        try:
            await self._admit()
        except ServiceError as exc:
            length = self._content_length()
            small = length is not None and length <= DRAIN_LIMIT
            if not small or self.request.headers.get("Expect", "").lower() == "100-continue":
                raise  # answer before the body is sent; the connection then closes
            self.failure = exc  # read the small body first, so the client gets a clean answer

    async def _admit(self) -> None:
        """Everything that can be decided before the body: auth, type, size, quota, rate."""
        await self.authenticate()
        self.ctx.upload_gate.enter(self.owner)
        self.gated = True
        limits = self.ctx.settings.limits
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            raise Unsupported("expected a multipart/form-data body")
        length = self._content_length()
        if length is not None and length > limits.max_file_size + MULTIPART_SLACK:
            raise TooLargeError(f"file too large: at most {limits.max_file_size} bytes")
        declared = self.int_param("size", 0)
        if declared is not None and declared > limits.max_file_size:
            raise TooLargeError(f"file too large: at most {limits.max_file_size} bytes")
        quota = await self.ctx.users.quota(self.owner)
        if (length is not None and length > quota.available + MULTIPART_SLACK) or (declared or 0) > quota.available:
            raise QuotaExceeded()
        wait = await self.ctx.ratelimits.hit(f"upload:{self.owner}", limits.uploads_per_window, limits.upload_window)
        if wait is not None:
            raise RateLimited("too many uploads", wait)
        try:
            self.parser = StreamingFormDataParser(self.request.headers)
        except Exception:
            raise Invalid("malformed multipart Content-Type (no boundary)") from None
        self.request.connection.set_max_body_size(limits.max_file_size + MULTIPART_SLACK)
        try:
            self.incoming = Incoming(self.ctx.store, min(limits.max_file_size, quota.available))
        except OSError:
            raise InsufficientStorage() from None
        self.file_target = FileTarget(self.incoming)
        self.parser.register("file", self.file_target)
        self.fields = {name: FieldTarget(name) for name in self.FIELDS}
        self.fields["size"] = SizeTarget(limits.max_file_size, quota.available)
        for name, target in self.fields.items():
            self.parser.register(name, target)

    def _content_length(self) -> int | None:
        value = self.request.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise Invalid("bad Content-Length") from None

    async def data_received(self, chunk: bytes) -> None:
        if self.failure is not None or self.incoming is None:
            self.drained += len(chunk)
            if self.drained > DRAIN_LIMIT and not self._finished:
                self._fail_now()
            return
        try:
            self.parser.data_received(chunk)
            await self.incoming.pump()
        except ServiceError as exc:
            self.failure = exc
        except WriteFailed:
            self.failure = InsufficientStorage()
        except TooLarge:
            max_size = self.ctx.settings.limits.max_file_size
            if self.incoming.size > max_size:
                self.failure = TooLargeError(f"file too large: at most {max_size} bytes")
            else:
                self.failure = QuotaExceeded()
        except Exception:
            self.failure = Invalid("malformed multipart body")
        if self.failure is not None:
            await self.incoming.discard()
            self._fail_now()

    def _fail_now(self) -> None:
        """Answer at once; Tornado then closes the connection instead of reading the rest."""
        assert self.failure is not None
        self.send_error(self.failure.status, exc_info=(type(self.failure), self.failure, None))

    async def post(self) -> None:
        self.received = True
        if self._finished:
            return
        if self.failure is not None:
            raise self.failure
        assert self.incoming is not None
        try:
            meta = self._meta()
        except ServiceError:
            await self.incoming.discard()
            raise
        doc = await self.store(self.incoming, meta)
        quota = await self.ctx.users.quota(self.owner)
        self.reply(self.ctx.file_manager.with_quota(self.render(doc), quota), 201)

    async def store(self, incoming: Incoming, meta: UploadMeta) -> dict:
        """Commit the received upload (avatars/ commits it differently)."""
        return await self.ctx.file_manager.store_upload(self.owner, incoming, meta)

    def render(self, doc: dict) -> dict:
        return self.ctx.file_manager.render(doc)

    def _meta(self) -> UploadMeta:
        if self.file_target.parts == 0 or not self.file_target._finished:
            raise Invalid("a file part is required", fields={"file": "required"})
        values = {name: target.value for name, target in self.fields.items()}
        size = values["size"]
        if size is not None and int(size) != self.incoming.size:  # type: ignore[union-attr]
            raise Invalid("size does not match the bytes received", fields={"size": "does not match the file"})
        metadata = None
        if values["metadata"]:
            try:
                metadata = json.loads(values["metadata"])
            except ValueError:
                metadata = None
            if not isinstance(metadata, dict) or len(values["metadata"].encode()) > 8192:
                raise Invalid(
                    "metadata: expected a JSON object of at most 8 KiB", fields={"metadata": "expected a JSON object ≤ 8 KiB"}
                )
        context = values["context"]
        if context is not None and (len(context) > 64 or "\x00" in context):
            raise Invalid("context: at most 64 characters", fields={"context": "at most 64 characters"})
        thumbs = (values["create_thumbnails"] or "true").strip().lower()
        if thumbs not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise Invalid("create_thumbnails: expected true or false", fields={"create_thumbnails": "expected true or false"})
        return UploadMeta(
            name=self.file_target.multipart_filename,
            declared_type=values["media_type"] or self.file_target.multipart_content_type,
            context=context or None,
            metadata=metadata,
            create_thumbnails=thumbs in ("1", "true", "yes", "on"),
            is_avatar=self.is_avatar,
        )

    def observe(self, metrics: Metrics) -> None:
        status = self.get_status()
        metrics.uploads.labels("stored" if status == 201 else str(status)).inc()
        if status == 201 and self.incoming is not None:
            metrics.upload_bytes.inc(self.incoming.size)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not self.received:
            # Tornado closes the connection rather than read the rest of the body: say so, so that
            # the client does not try to reuse it.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def on_connection_close(self) -> None:
        self.on_finish()

    def on_finish(self) -> None:
        if self.incoming is not None and not self.received:
            self.incoming.abandon()
        if self.gated:
            self.gated = False
            self.ctx.upload_gate.leave(self.owner)


class SlotHandler(BaseHandler):
    """GET files/slot/: may the caller upload this, or do they already own the content?"""

    auth = True

    async def get(self) -> None:
        digest = (self.str_param("hash", 64) or "").lower()
        if not _DIGEST.match(digest):
            raise Invalid("hash: expected md5 (32 hex) or sha256 (64 hex)", fields={"hash": "expected 32 or 64 hex digits"})
        size = self.int_param("size", 0)
        if size is None:
            raise Invalid("size is required", fields={"size": "required"})
        name = self.str_param("name", 4096)
        max_size = self.ctx.settings.limits.max_file_size
        if size > max_size:
            raise TooLargeError(f"file too large: at most {max_size} bytes")
        quota = await self.ctx.users.quota(self.owner)
        if size > quota.available:
            raise QuotaExceeded()
        manager = self.ctx.file_manager
        existing = await manager.find_for_slot(self.owner, size, digest)
        if existing is not None:
            doc = await manager.link_existing(self.owner, existing, name)
            if doc is not None:
                quota = await self.ctx.users.quota(self.owner)
                self.reply(manager.with_quota(manager.render(doc), quota))
                return
        self.reply({"quota": quota.quota, "used": quota.used})


class FilesHandler(BaseHandler):
    """GET files/ lists the caller's files; DELETE files/ removes some of them."""

    auth = True
    is_avatar = False
    FILTERS: tuple[str, ...] = ("id", "media_type", "context", "date_gte", "date_lte", "size_gte", "size_lte")
    DELETE_BY: tuple[str, ...] = ("id", "media_type", "context", "date_gte", "date_lte")

    async def get(self) -> None:
        criteria = self.criteria(*self.FILTERS)
        page = self.page()
        listing = await self.ctx.file_manager.list(self.owner, criteria, page, self.is_avatar)
        listing.items = [self.decorate(item) for item in listing.items]
        self.reply(listing.as_json())

    def decorate(self, item: dict[str, Any]) -> dict[str, Any]:
        return item

    async def delete(self) -> None:
        criteria = self.criteria(*self.DELETE_BY)
        url = self.str_param("file", 8192)
        if url is not None:
            criteria.slot_id = slot_from_url(url)
        if not any(
            getattr(criteria, name) is not None for name in ("ids", "slot_id", "media_type", "context", "date_gte", "date_lte")
        ):
            raise Invalid("give at least one of: id, file, media_type, context, date_gte, date_lte")
        deleted = await self.ctx.file_manager.delete(self.owner, criteria, self.is_avatar)
        if not deleted:
            raise NotFound("no matching file")
        quota = await self.ctx.users.quota(self.owner)
        self.reply({"deleted": deleted, "used": quota.used, "quota": quota.quota})


def slot_from_url(url: str) -> str:
    """The slot_id in a download URL (absolute or just its path); '' when there is none."""
    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    if "media" in parts:
        index = len(parts) - 1 - parts[::-1].index("media")
        if index + 1 < len(parts):
            return parts[index + 1]
    return ""


class StatsHandler(BaseHandler):
    """GET files/stats/: counts and bytes per kind."""

    auth = True

    async def get(self) -> None:
        criteria = self.criteria("media_type", "date_gte", "date_lte")
        self.reply(await self.ctx.file_manager.stats(self.owner, criteria))
