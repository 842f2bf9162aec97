"""The users' web page: `/` (web/index.html), its static files under `/web/`, and `about/`.

Every answer of the page carries a strict Content-Security-Policy (no inline script, no eval,
images from this service only), `frame-ancestors 'none'`, `nosniff` and no referrer; see
docs/web.md. The page talks to the API under /api/v1/ like any other client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado import httputil
from tornado.web import HTTPError, StaticFileHandler

from handlers.base import BaseHandler
from services import evaluation
from settings import HERE

WEB_DIR = HERE / "web"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def content_security_policy(public_url: str, logo: str) -> str:
    """Scripts, styles and API calls from this origin only; images also from the download origin
    (server.public_url, when it differs) and an https logo's origin."""
    images = ["'self'"]
    for url in (public_url, logo):
        origin = _origin(url)
        if origin and origin not in images:
            images.append(origin)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def set_page_headers(handler: Any) -> None:
    settings = handler.application.ctx.settings
    handler.set_header("Content-Security-Policy", content_security_policy(settings.public_url, settings.web.logo))
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("Cross-Origin-Opener-Policy", "same-origin")
    handler.set_header("Permissions-Policy", "camera=(), microphone=(), geolocation=()")


class PageHandler(StaticFileHandler):
    """GET|HEAD `/` and `/web/<file>`: the page's files, revalidated on every load (ETag)."""

    def initialize(self, path: str = str(WEB_DIR), default_filename: str | None = None) -> None:  # type: ignore[override]
        super().initialize(path=path, default_filename=default_filename)

    def set_default_headers(self) -> None:
        set_page_headers(self)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return TYPES.get(Path(self.absolute_path).suffix) or super().get_content_type()

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        name = Path(absolute_path).name
        if name.startswith(".") or Path(absolute_path).suffix not in (".html", ".js", ".css", ".svg", ".png"):
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        message = httputil.responses.get(status_code, "error").lower()
        self.finish(json.dumps({"status": str(status_code), "error": message}))


class IndexHandler(PageHandler):
    """GET|HEAD `/`: web/index.html."""

    async def get(self, path: str = "", include_body: bool = True) -> None:
        await super().get("index.html", include_body)

    async def head(self, path: str = "") -> None:
        await self.get(path, include_body=False)


class LogoHandler(PageHandler):
    """GET|HEAD `/web/logo`: the operator's logo file (`web.logo`), when it is a file."""

    async def get(self, path: str = "", include_body: bool = True) -> None:
        logo = self.application.ctx.settings.web.logo  # type: ignore[attr-defined]
        if not logo or _origin(logo):
            raise HTTPError(404)
        file = (HERE / logo).resolve()
        self.root = str(file.parent)
        await super().get(file.name, include_body)

    async def head(self, path: str = "") -> None:
        await self.get(path, include_body=False)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        return StaticFileHandler.validate_absolute_path(self, root, absolute_path)


class AboutHandler(BaseHandler):
    """GET about/: the page's title, logo and code hint, the service's JID, evaluation or not."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.reply(evaluation.about(self.ctx.settings))
