"""What every API handler shares: the error body, bearer auth, parameters, pagination."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from pymongo.errors import ConnectionFailure, PyMongoError
from tornado import httputil
from tornado.web import HTTPError, RequestHandler

from models.files import SORT_FIELDS, Criteria, Page
from models.tokens import TokenInfo
from services.errors import Invalid, ServiceError, Unauthorized
from storage.ingest import WriteFailed

if TYPE_CHECKING:
    from services.context import Context
    from services.metrics import Metrics

log = logging.getLogger("gallery.http")
access = logging.getLogger("gallery.access")

STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)
MAX_PER_PAGE = 500
INT64_MAX = 2**63 - 1  # the largest integer the database stores; larger ones are a 400


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("parameters must be UTF-8") from None
    return value


def parse_datetime(name: str, value: str, end_of_day: bool = False) -> dt.datetime:
    """`YYYY-MM-DD` or ISO 8601 with or without an offset (naive = UTC). A bare date used as an
    upper bound means the end of that day."""
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
            return day + dt.timedelta(days=1, milliseconds=-1) if end_of_day else day
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{name}: not a date", fields={name: "expected YYYY-MM-DD or an ISO 8601 datetime"}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


class BaseHandler(RequestHandler):
    """JSON API handler. Subclasses set `auth = True` to require a bearer token."""

    auth = False
    token: TokenInfo | None = None
    _params: dict[str, list[Any]] | None = None
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

    async def prepare(self) -> None:
        if self.auth:
            await self.authenticate()

    async def authenticate(self) -> None:
        header = self.request.headers.get("Authorization")
        if not header:
            raise Unauthorized("authentication required")
        match = _BEARER.match(header)
        if not match:
            raise Unauthorized("expected a bearer token", error="invalid_request")
        self.token = await self.ctx.tokens.verify(match.group(1))
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
        self.finish(json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    def no_content(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = httputil.responses.get(status_code, "error").lower()
        fields = None
        if isinstance(exc, ServiceError):
            status_code, message, fields = exc.status, exc.message, exc.fields
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(exc.retry_after))
            if isinstance(exc, Unauthorized):
                self.set_header("WWW-Authenticate", exc.challenge)
        elif isinstance(exc, HTTPError):
            message = exc.log_message or message
            if exc.args[2:]:
                message = message % exc.args[2:]
        elif isinstance(exc, WriteFailed) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS):
            status_code, message = 507, "the storage volume is full or not writable"
        elif isinstance(exc, (ConnectionFailure, PyMongoError)):
            status_code, message = 503, "database unavailable"
            self.db_failed = True
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
        if isinstance(value, WriteFailed):
            log.error("storage write failed on %s %s: %s", self.request.method, self.request.path, value)
            return
        if isinstance(value, PyMongoError):
            log.warning("database error on %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    # -- parameters ---------------------------------------------------------------------
    def params(self) -> dict[str, list[Any]]:
        """Query string plus body (JSON object, form-encoded or multipart): name -> values."""
        if self._params is not None:
            return self._params
        merged: dict[str, list[Any]] = {}
        for name, values in self.request.query_arguments.items():
            merged.setdefault(_text(name), []).extend(_text(v) for v in values)
        merged.update(self._body_params())
        self._params = merged
        return merged

    def _body_params(self) -> dict[str, list[Any]]:
        body = self.request.body
        if not body:
            return {}
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json":
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise Invalid("body is not valid JSON") from None
            if not isinstance(data, dict):
                raise Invalid("JSON body must be an object")
            return {str(k): v if isinstance(v, list) else [v] for k, v in data.items()}
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        httputil.parse_body_arguments(content_type, body, arguments, files, self.request.headers)
        return {_text(k): [_text(v) for v in values] for k, values in arguments.items()}

    def param(self, name: str) -> Any:
        values = self.params().get(name)
        if not values:
            return None
        value = values[-1]
        return None if value == "" else value

    def str_param(self, name: str, max_length: int | None = None) -> str | None:
        value = self.param(name)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise Invalid(f"{name}: expected a string", fields={name: "expected a string"})
        value = str(value)
        if "\x00" in value:
            raise Invalid(f"{name}: contains a NUL character", fields={name: "contains a NUL character"})
        if max_length is not None and len(value) > max_length:
            raise Invalid(f"{name}: too long", fields={name: f"at most {max_length} characters"})
        return value

    def int_param(self, name: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.param(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise Invalid(f"{name}: expected an integer", fields={name: "expected an integer"})
        try:
            number = int(value) if isinstance(value, int) else int(value.strip(), 10)
        except ValueError:
            raise Invalid(f"{name}: expected an integer", fields={name: "expected an integer"}) from None
        maximum = INT64_MAX if maximum is None else maximum
        if (minimum is not None and number < minimum) or number > maximum:
            bounds = f"between {minimum} and {maximum}" if minimum is not None else f"at most {maximum}"
            raise Invalid(f"{name}: must be {bounds}", fields={name: f"must be {bounds}"})
        return number

    def bool_param(self, name: str, default: bool) -> bool:
        value = self.param(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise Invalid(f"{name}: expected true or false", fields={name: "expected true or false"})

    def list_param(self, name: str) -> list[str] | None:
        """Repeated parameters, a JSON list, or comma-separated values."""
        values = [v for v in self.params().get(name, []) if v not in ("", None)]
        if not values:
            return None
        result = []
        for value in values:
            if isinstance(value, (dict, list, bool, float)):
                raise Invalid(f"{name}: expected strings", fields={name: "expected strings"})
            result.extend(part.strip() for part in str(value).split(",") if part.strip())
        return result or None

    def date_param(self, name: str, end_of_day: bool = False) -> dt.datetime | None:
        value = self.str_param(name, 64)
        return None if value is None else parse_datetime(name, value, end_of_day)

    def criteria(self, *names: str) -> Criteria:
        """The filters named (a subset of Criteria's fields) from the request."""
        c = Criteria()
        for name in names:
            if name == "id":
                c.ids = self.list_param("id")
            elif name in ("media_type", "context"):
                setattr(c, name, self.str_param(name, 255))
            elif name in ("date_gte", "date_lte"):
                setattr(c, name, self.date_param(name, end_of_day=name == "date_lte"))
            elif name in ("size_gte", "size_lte"):
                setattr(c, name, self.int_param(name, 0))
        return c

    def page(self) -> Page:
        number = self.int_param("page", 1) or 1
        per_page = self.int_param("obj_per_page", 1, MAX_PER_PAGE) or 50
        order: list[tuple[str, int]] = []
        for item in self.list_param("order_by") or ["-created_at"]:
            key = item.lstrip("-+")
            if key not in SORT_FIELDS:
                allowed = ", ".join(SORT_FIELDS)
                raise Invalid(f"order_by: unknown field {key!r}", fields={"order_by": f"allowed: {allowed}"})
            order.append((key, -1 if item.startswith("-") else 1))
        return Page(number, per_page, order)


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request, and its metrics. Never tokens, codes or file names."""
    status = handler.get_status()
    millis = 1000.0 * handler.request.request_time()
    if not isinstance(handler, BaseHandler):  # pragma: no cover - every route is a BaseHandler
        access.info("%s %s %d %.1fms", handler.request.method, handler.request.path, status, millis)
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
