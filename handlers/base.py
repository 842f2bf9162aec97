"""What every API handler shares: the error body, CORS, bearer auth, parameters."""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

import orjson
from tornado import httputil
from tornado.web import HTTPError, RequestHandler

from services.accounts import TokenInfo
from services.errors import DatabaseUnavailable, InsufficientStorage, ServiceError, Unauthorized, classify
from services.params import Params

if TYPE_CHECKING:
    from services.context import Context
    from services.metrics import Metrics

log = logging.getLogger("gallery.http")
access = logging.getLogger("gallery.access")

_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE = "Retry-After, WWW-Authenticate, X-Request-Id"
CORS_MAX_AGE = "86400"
# what orjson must hand back rather than encode its own way: subclasses of str, int, dict and
# list, dataclasses, datetimes (json.dumps encodes the first as their base type and refuses the
# others); a TypeError then sends the body through json.dumps
_ORJSON = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def to_json(body: Any) -> bytes:
    """An answer's body as UTF-8 JSON, byte for byte what `json.dumps(body, ensure_ascii=False,
    separators=(",", ":"))` gives, by orjson (a page of files in a tenth of the time). What
    orjson would write otherwise goes through json.dumps: what it refuses (integers beyond 64
    bits, lone surrogates, keys that are not strings, the types above) and a file's `metadata`
    holding any float (orjson writes 1e-7 where json.dumps writes 1e-07; files stored before
    NaN and the infinities were refused at upload may hold them, which orjson writes as null): a
    file's metadata is the only client-given JSON an answer holds."""
    if _user_floats(body):
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        return orjson.dumps(body, option=_ORJSON)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _user_floats(body: Any) -> bool:
    """Does the metadata of the file (`body`) or files (`body["items"]`) hold a float?"""
    if not isinstance(body, dict):
        return False
    items = body.get("items")
    found = items if isinstance(items, list) else (body,)
    return any(_has_float(item.get("metadata")) for item in found if isinstance(item, dict))


def _has_float(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_float(v) for v in value)
    return False


class BaseHandler(RequestHandler):
    """JSON API handler. Subclasses set `auth = True` to require a bearer token."""

    auth = False
    token: TokenInfo | None = None
    _params: Params | None = None
    _request_id: str | None = None
    bytes_sent = 0
    db_failed = False

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = secrets.token_hex(8)
        return self._request_id

    @property
    def ctx(self) -> Context:
        return self.application.ctx  # type: ignore[attr-defined]

    @property
    def owner(self) -> str:
        assert self.token is not None
        return self.token.owner

    def set_default_headers(self) -> None:
        self.set_header("X-Request-Id", self.request_id)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.allow_origin()

    def allow_origin(self) -> None:
        """CORS for web clients on other origins (never credentials mode: tokens are headers)."""
        allowed = self.ctx.settings.server.cors_origins
        origin = self.request.headers.get("Origin")
        if "*" in allowed:
            self.set_header("Access-Control-Allow-Origin", "*")
        elif origin in allowed:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE)

    async def prepare(self) -> None:
        self.refuse_unimplemented()
        if self.request.method == "OPTIONS":
            return
        if self.auth:
            await self.authenticate()

    def refuse_unimplemented(self) -> None:
        """405 for a method the route does not have, before anything else is looked at."""
        method = (self.request.method or "").lower()
        if getattr(type(self), method, None) is getattr(RequestHandler, method, None):
            raise HTTPError(405, log_message="method not allowed")

    def options(self, *args: Any, **kwargs: Any) -> None:
        """A CORS preflight: answered for every route, without authentication."""
        self.set_header("Access-Control-Allow-Methods", CORS_METHODS)
        self.set_header("Access-Control-Allow-Headers", CORS_HEADERS)
        self.set_header("Access-Control-Max-Age", CORS_MAX_AGE)
        self.no_content()

    async def authenticate(self) -> None:
        header = self.request.headers.get("Authorization")
        if not header:
            raise Unauthorized("authentication required")
        match = _BEARER.match(header)
        if not match:
            raise Unauthorized("expected a bearer token", error="invalid_request")
        self.token = await self.ctx.accounts.verify_token(match.group(1))
        if self.token is None:
            raise Unauthorized("invalid, expired or revoked token", error="invalid_token")

    # -- responses ----------------------------------------------------------------------
    def write(self, chunk: str | bytes | dict) -> None:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            self.bytes_sent += len(chunk)
        elif isinstance(chunk, str):
            self.bytes_sent += len(chunk.encode("utf-8"))
        super().write(chunk)

    def observe(self, metrics: Metrics) -> None:
        """Count what this request did (downloads and uploads add their bytes)."""

    def log_line(self) -> str:
        """What the access log says about the request path: the route, not file names."""
        return type(self).__name__.removesuffix("Handler")

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(to_json(body))

    def no_content(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = httputil.responses.get(status_code, "error").lower()
        fields = None
        known = classify(exc) if exc is not None else None
        if known is not None:
            status_code, message, fields = known.status, known.message, known.fields
            if known.retry_after is not None:
                self.set_header("Retry-After", str(known.retry_after))
            if isinstance(known, Unauthorized):
                self.set_header("WWW-Authenticate", known.challenge)
            self.db_failed = isinstance(known, DatabaseUnavailable)
        elif isinstance(exc, HTTPError):
            message = exc.log_message or message
            if exc.args[2:]:
                message = message % exc.args[2:]
        elif status_code >= 500:
            status_code, message = 500, "internal error"
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        body: dict[str, Any] = {"status": str(status_code), "error": message}
        if fields:
            body["fields"] = fields
        self.finish(json.dumps(body, ensure_ascii=False))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ServiceError, HTTPError)):
            return
        known = classify(value)
        if isinstance(known, InsufficientStorage):
            log.error("storage write failed on %s %s: %s", self.request.method, self.request.path, value)
            return
        if isinstance(known, DatabaseUnavailable):
            log.warning("database error on %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    # -- parameters ---------------------------------------------------------------------
    @property
    def params(self) -> Params:
        """Query string plus body (JSON object, form-encoded or multipart)."""
        if self._params is None:
            headers = self.request.headers
            self._params = Params.from_request(self.request.query_arguments, headers.get("Content-Type", ""), self.request.body)
        return self._params


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request, and its metrics. Never tokens, codes or file names."""
    status = handler.get_status()
    millis = 1000.0 * handler.request.request_time()
    if not isinstance(handler, BaseHandler):  # static files of the web page, and Tornado's own answers
        access.info("method=%s route=%s status=%d ms=%.1f", handler.request.method, type(handler).__name__, status, millis)
        return
    user = handler.token.owner if handler.token else "-"
    access.info(
        "id=%s ip=%s method=%s route=%s status=%d user=%s bytes=%d ms=%.1f",
        handler.request_id,
        handler.request.remote_ip,
        handler.request.method,
        handler.log_line(),
        status,
        user,
        handler.bytes_sent,
        millis,
    )
    metrics = handler.ctx.metrics
    route = type(handler).__name__.removesuffix("Handler")
    metrics.requests.labels(route, handler.request.method, f"{status // 100}xx").observe(millis / 1000.0)
    if handler.db_failed:
        metrics.db_errors.inc()
    handler.observe(metrics)


class NotFoundHandler(BaseHandler):
    """Every unknown path: the contract's 404 body."""

    def prepare(self) -> None:  # type: ignore[override]
        raise HTTPError(404, log_message="not found")
