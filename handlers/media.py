"""GET|HEAD /media/<slot_id>/<name>: safe, cacheable, ranged, streamed downloads."""

from __future__ import annotations

import email.utils
import re
from contextlib import aclosing
from urllib.parse import quote

from tornado.iostream import StreamClosedError

from handlers.base import BaseHandler
from services.files import Download
from services.metrics import Metrics

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
INLINE_PREFIXES = ("audio/", "video/")


def inline(media_type: str) -> bool:
    """Only content a browser shows without running anything is served inline."""
    if media_type == "text/plain" or media_type.startswith(INLINE_PREFIXES):
        return True
    return media_type.startswith("image/") and "svg" not in media_type and "xml" not in media_type


def disposition(media_type: str, name: str) -> str:
    kind = "inline" if inline(media_type) else "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end inclusive) for one satisfiable range; None to ignore the header (malformed or
    several ranges: the whole body is sent); False when it cannot be satisfied (416)."""
    match = _RANGE.match(header)
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


def _http_date_equal_or_later(header: str, last_modified: float) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    return since is not None and int(last_modified) <= since.timestamp()


class MediaHandler(BaseHandler):
    def set_default_headers(self) -> None:
        self.set_header("X-Request-Id", self.request_id)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox; frame-ancestors 'none'")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag, Content-Disposition")
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")

    def log_line(self) -> str:
        path_args = getattr(self, "path_args", None)  # unset when Tornado refused the request itself
        slot_id = path_args[0] if path_args else ""
        return f"Media slot={slot_id[:6]}…"

    def observe(self, metrics: Metrics) -> None:
        metrics.downloads.labels(str(self.get_status())).inc()
        if self.request.method == "GET":
            metrics.download_bytes.inc(self.bytes_sent)

    async def head(self, slot_id: str, name: str) -> None:
        await self.get(slot_id, name, include_body=False)

    def options(self, slot_id: str, name: str) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Range, If-None-Match, If-Modified-Since, If-Range")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    async def get(self, slot_id: str, name: str, include_body: bool = True) -> None:
        await self.serve(slot_id, name, include_body)

    async def serve(self, slot_id: str, name: str | None, include_body: bool) -> None:
        """The file behind the link (`name` None: the file itself, whatever the URL calls it)."""
        found = await self.ctx.files.download(slot_id, name)
        if found is None:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.send_error(404)
            return
        size = found.size
        self._headers_for(found, size)
        if self._not_modified(found):
            self.set_status(304)
            for header in ("Content-Type", "Content-Disposition"):
                self.clear_header(header)
            self.finish()
            return
        start, end = 0, size - 1
        requested = self.request.headers.get("Range")
        if requested and self._range_applies(found):
            parsed = parse_range(requested, size)
            if parsed is False:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{size}")
                self.set_header("Content-Type", "application/json; charset=utf-8")
                self.clear_header("Content-Disposition")
                self.finish(f'{{"status": "416", "error": "range not satisfiable (size {size})"}}')
                return
            if parsed:
                start, end = parsed
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        length = end - start + 1 if size else 0
        self.set_header("Content-Length", length)
        accel = self.ctx.settings.server.x_accel_redirect
        path = self.ctx.files.accel_path(found) if accel else None
        if path is not None:
            self.clear_header("Content-Length")
            self.set_status(200)
            self.clear_header("Content-Range")
            self.set_header("X-Accel-Redirect", f"{accel}/{path}")
            self.finish()
            return
        if not include_body or length == 0:
            self.finish()
            return
        await self._stream(found, start, length)

    def _headers_for(self, found: Download, size: int) -> None:
        self.set_header("Content-Type", found.media_type)
        self.set_header("Content-Disposition", disposition(found.media_type, found.name))
        self.set_header("ETag", found.etag)
        self.set_header("Last-Modified", found.last_modified)
        self.set_header("Cache-Control", "public, max-age=31536000, immutable")
        self.set_header("Accept-Ranges", "bytes")

    def _not_modified(self, found: Download) -> bool:
        match = self.request.headers.get("If-None-Match")
        if match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            return "*" in tags or found.etag in tags
        since = self.request.headers.get("If-Modified-Since")
        return since is not None and _http_date_equal_or_later(since, found.last_modified.timestamp())

    def _range_applies(self, found: Download) -> bool:
        condition = self.request.headers.get("If-Range")
        if condition is None:
            return True
        condition = condition.strip()
        if condition.startswith(('"', "W/")):
            return condition == found.etag
        try:
            when = email.utils.parsedate_to_datetime(condition)
        except (TypeError, ValueError, IndexError):
            return False
        return when is not None and int(when.timestamp()) == int(found.last_modified.timestamp())

    async def _stream(self, found: Download, start: int, length: int) -> None:
        """Hand each chunk to the socket and wait until it took it before reading the next."""
        try:
            await self.flush()  # the headers
            async with aclosing(self.ctx.files.read(found, start, length)) as chunks:
                async for view in chunks:
                    self.bytes_sent += len(view)
                    await self.request.connection.write(view)
        except StreamClosedError:
            return  # the client went away
        self.finish()
