"""files/: slot, streaming upload, list, delete, stats."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from tornado.web import stream_request_body

from handlers.base import BaseHandler
from handlers.multipart import FieldTarget, MultipartUpload
from services.errors import InsufficientStorage, Invalid, QuotaExceeded, ServiceError, TooLarge, Unsupported, WriteFailed
from services.files import Admission, Incoming, Overflow, UploadMeta
from services.metrics import Metrics
from services.params import Criteria, parse_bool, parse_int, parse_metadata

# Room for the multipart framing and the small fields around the file part.
MULTIPART_SLACK = 64 * 1024
# A rejected request whose body is at most this large is read to the end before the error is sent,
# so the client sees the answer instead of a reset; a larger one is answered at once and cut off.
DRAIN_LIMIT = 1 << 20
CHUNKED_SLACK = 8 << 20  # above what Tornado buffers before it hands a chunked body over (server.py)
_DIGEST = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})$")


@stream_request_body
class StreamedUpload(BaseHandler):
    """What every route that takes an upload as its request body shares: admission before the
    body, the bytes fed into the file manager's `Incoming` as they arrive, the answer to a
    refusal (at once, or after draining a small body), and the clean-up when the client goes."""

    admission: Admission | None = None
    incoming: Incoming | None = None
    slot_size: int | None = None  # an upload into a slot of this exact size (open_slot)
    failure: ServiceError | None = None
    drained = 0
    received = False  # the whole body has arrived; the upload's bytes are post()'s to commit

    async def prepare(self) -> None:
        self.refuse_unimplemented()
        if self.request.method == "OPTIONS":
            return
        try:
            await self.admit()
        except ServiceError as exc:
            length = self.content_length()
            small = length is not None and length <= DRAIN_LIMIT
            if not small or self.request.headers.get("Expect", "").lower() == "100-continue":
                raise  # answer before the body is sent; the connection then closes
            self.failure = exc  # read the small body first, so the client gets a clean answer

    async def admit(self) -> None:
        """Authorise the upload and set up `incoming` (and whatever parses the body)."""
        raise NotImplementedError

    def feed(self, chunk: bytes) -> None:
        """Pass a piece of the body on (to a parser, or straight into `incoming`)."""
        raise NotImplementedError

    def body_limit(self, most: int) -> int:
        """Tornado's own cap on this request's body. A chunked body is handed over in pieces that
        Tornado coalesces while more is already buffered (up to its read buffer), so its cap sits
        above that much: the upload's own limit then answers first, with 413."""
        return most if self.content_length() is not None else most + CHUNKED_SLACK

    def content_length(self) -> int | None:
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
            self.feed(chunk)
            if self.incoming.size > self.incoming.limit:  # the parser may swallow what a target raised
                raise Overflow
            await self.incoming.pump()
        except ServiceError as exc:
            self.failure = exc
        except WriteFailed:
            self.failure = InsufficientStorage()
        except Overflow:
            self.failure = self.ctx.files.overflow(self.incoming.size)
        except Exception:
            self.failure = Invalid("malformed multipart body")
        if self.failure is not None:
            await self.incoming.discard()
            length = self.content_length()
            if length is not None and length > DRAIN_LIMIT:
                self._fail_now()
            # else the rest (at most DRAIN_LIMIT more) is read and dropped before the answer: a
            # client still sending when the connection closes may see a reset, not the answer

    def _fail_now(self) -> None:
        """Answer at once; Tornado then closes the connection instead of reading the rest."""
        assert self.failure is not None
        self.send_error(self.failure.status, exc_info=(type(self.failure), self.failure, None))

    def open_slot(self, admission: Admission, size: int) -> None:
        """The upload is into a slot of exactly `size` bytes (XEP-0363's, Prosody's share): a
        longer body is refused as it arrives (`feed_slot`), another length at its end
        (`received_slot_body`), with 413."""
        self.admission = admission
        self.slot_size = size
        self.request.connection.set_max_body_size(self.body_limit(size + 1))
        self.incoming = self.ctx.files.incoming(admission)

    def feed_slot(self, chunk: bytes) -> None:
        assert self.incoming is not None and self.slot_size is not None
        if self.incoming.size + len(chunk) > self.slot_size:
            raise TooLarge(message=f"more than the slot's {self.slot_size} bytes")
        self.incoming.feed(chunk)

    async def received_slot_body(self) -> Incoming | None:
        """received_body(), refused unless it is the slot's size (a chunked body may be shorter)."""
        incoming = await self.received_body()
        if incoming is not None and incoming.size != self.slot_size:
            await incoming.discard()
            raise TooLarge(message=f"received {incoming.size} bytes, the slot is for {self.slot_size}")
        return incoming

    async def received_body(self) -> Incoming | None:
        """Call first in the method that answers: the upload's bytes, or None when the request
        was already answered; raises the refusal found while the body arrived."""
        self.received = True
        if self._finished:
            return None
        if self.failure is not None:
            raise self.failure
        return self.incoming

    def observe(self, metrics: Metrics) -> None:
        status = self.get_status()
        metrics.uploads.labels("stored" if status == 201 else str(status)).inc()
        if status == 201 and self.incoming is not None:
            metrics.upload_bytes.inc(self.incoming.size)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not self.received and self.request.method != "OPTIONS":
            # Tornado closes the connection rather than read the rest of the body: say so, so that
            # the client does not try to reuse it.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def on_connection_close(self) -> None:
        if self.received and not self._finished:
            # the whole body is in and being committed: the upload keeps its place (its lease)
            # until the method has answered, when Tornado calls on_finish
            return
        self.on_finish()

    def on_finish(self) -> None:
        if self.incoming is not None and not self.received:
            self.incoming.abandon()
        if self.admission is not None:
            self.admission.close()


class SizeTarget(FieldTarget):
    """The declared `size`: checked against the admission as soon as it has arrived, before the
    file."""

    def __init__(self, handler: UploadHandler) -> None:
        super().__init__("size")
        self.handler = handler

    def on_finish(self) -> None:
        declared = parse_int("size", self.value, 0)
        if declared is None:
            raise Invalid("size: expected an integer", fields={"size": "expected an integer"})
        self.handler.ctx.files.check_size(declared)
        assert self.handler.admission is not None
        if declared > self.handler.admission.limit:
            raise QuotaExceeded()


class UploadHandler(StreamedUpload):
    """POST files/upload/: multipart streamed into the store, hashed on the way, committed
    atomically; with `context=avatar` (or on avatar/upload/) an avatar upload."""

    FIELDS = ("media_type", "create_thumbnails", "create_thumbnail", "metadata", "context")
    always_avatar = False
    form: MultipartUpload

    async def admit(self) -> None:
        await self.authenticate()
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            raise Unsupported("expected a multipart/form-data body")
        files = self.ctx.files
        self.admission = await files.admit(
            self.owner, length=self.content_length(), declared=self.params.int("size", 0), slack=MULTIPART_SLACK
        )
        self.form = MultipartUpload(self.request.headers, self.FIELDS, self._feed_file)
        self.form.register("size", SizeTarget(self))
        self.request.connection.set_max_body_size(self.body_limit(files.limits.max_file_size + MULTIPART_SLACK))
        self.incoming = files.incoming(self.admission)

    def _feed_file(self, chunk: bytes) -> None:
        assert self.incoming is not None
        self.incoming.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        self.form.data_received(chunk)

    async def post(self) -> None:
        incoming = await self.received_body()
        if incoming is None:
            return
        try:
            meta = self._meta()
        except ServiceError:
            await incoming.discard()
            raise
        if meta.is_avatar:
            doc = await self.ctx.avatars.store_upload(self.owner, incoming, meta)
        else:
            doc = await self.ctx.files.store_upload(self.owner, incoming, meta)
        self.reply(self.ctx.files.render(doc, await self.ctx.files.quota(self.owner)), 201)

    def _meta(self) -> UploadMeta:
        form = self.form
        if not form.file.complete:
            raise Invalid("a file part is required", fields={"file": "required"})
        values = form.values()
        size = values["size"]
        assert self.incoming is not None
        if size is not None and int(size) != self.incoming.size:
            raise Invalid("size does not match the bytes received", fields={"size": "does not match the file"})
        metadata = parse_metadata(values["metadata"])
        context = values["context"] or self.params.str("context")
        if context is not None and (len(context) > 64 or "\x00" in context):
            raise Invalid("context: at most 64 characters", fields={"context": "at most 64 characters"})
        thumbnails = values["create_thumbnails"] if values["create_thumbnails"] is not None else values["create_thumbnail"]
        return UploadMeta(
            name=form.filename,
            declared_type=values["media_type"] or form.content_type,
            context=context or None,
            metadata=metadata,
            create_thumbnails=parse_bool("create_thumbnails", (thumbnails or "").strip(), True),
            is_avatar=self.always_avatar or context == "avatar",
        )


class SlotHandler(BaseHandler):
    """GET files/slot/: may the caller upload this, or do they already own the content?"""

    auth = True

    async def get(self) -> None:
        digest = (self.params.str("hash", 64) or "").lower()
        if not _DIGEST.match(digest):
            raise Invalid(
                "hash: expected md5 (32 hex), sha1 (40 hex) or sha256 (64 hex)",
                fields={"hash": "expected 32, 40 or 64 hex digits"},
            )
        size = self.params.int("size", 0)
        if size is None:
            raise Invalid("size is required", fields={"size": "required"})
        self.reply(await self.ctx.files.slot(self.owner, digest, size, self.params.str("name", 4096)))


class FilesHandler(BaseHandler):
    """GET files/ lists the caller's files; DELETE files/ removes some of them."""

    auth = True
    is_avatar = False
    DELETE_BY = Criteria.DELETE

    async def get(self) -> None:
        criteria = self.params.criteria(Criteria.LIST)
        self.reply(await self.ctx.files.list(self.owner, criteria, self.params.page(), self.is_avatar))

    async def delete(self) -> None:
        criteria = self.params.criteria(self.DELETE_BY)
        url = self.params.str("file", 8192)
        if url is not None:
            criteria.slot_id = slot_from_url(url)
        if criteria.empty:
            raise Invalid("give at least one of: id, file, media_type, context, date_gte, date_lte")
        self.reply(await self.ctx.files.delete_answer(self.owner, criteria, self.is_avatar))


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
        self.reply(await self.ctx.files.stats(self.owner, self.params.criteria(Criteria.STATS)))


class PercentHandler(BaseHandler):
    """GET|DELETE files/percent/<n>/: the caller's oldest files that together first reach n % of
    the space they use ("free up space"): GET pages them like files/, DELETE deletes them."""

    auth = True

    def _share(self, percent: str) -> tuple[int, list[str] | None]:
        n = parse_int("percent", percent, 1, 100)
        assert n is not None
        return n, self.params.criteria(("contexts",)).contexts

    async def get(self, percent: str) -> None:
        n, contexts = self._share(percent)
        page = self.params.page()
        self.reply(await self.ctx.files.oldest_page(self.owner, n, contexts, page))

    async def delete(self, percent: str) -> None:
        n, contexts = self._share(percent)
        self.reply(await self.ctx.files.delete_oldest(self.owner, n, contexts))
