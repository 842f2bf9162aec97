"""HTTP handlers, one module per resource, and the route table."""

from __future__ import annotations

from typing import Any

from tornado.web import Application

from handlers import account, avatars, files, health, media, prosody_share, upload, web
from handlers.base import NotFoundHandler, log_request


def api(path: str) -> str:
    """Every API route answers with and without the trailing slash."""
    return rf"/api/v1/{path}/?"


ROUTES: list[tuple[str, Any]] = [
    (api("files/slot"), files.SlotHandler),
    (api("files/upload"), files.UploadHandler),
    (api("files/stats"), files.StatsHandler),
    (api("files/percent/(?P<percent>[^/]+)"), files.PercentHandler),
    (api("files"), files.FilesHandler),
    (api("account/quota"), account.QuotaHandler),
    (api("account/xmpp_code_request"), account.CodeRequestHandler),
    (api("account/xmpp_auth"), account.AuthHandler),
    (api("account/tokens"), account.TokensHandler),
    (api("account/list"), account.AccountListHandler),
    (api("account"), account.AccountDeleteHandler),
    (api("avatar/upload"), avatars.AvatarUploadHandler),
    (api("avatar"), avatars.AvatarsHandler),
    (r"/api/v1/openapi\.yaml", health.OpenApiHandler),
    (r"/healthz/?", health.HealthHandler),
    (r"/metrics", health.MetricsHandler),
    (r"/media/([^/]+)/([^/]+)", media.MediaHandler),
    (r"/upload/([^/]+)/([^/]+)", upload.SlotUploadHandler),
    # the users' web page (handlers/web.py)
    (api("about"), web.AboutHandler),
    (r"/", web.IndexHandler),
    (r"/web/logo", web.LogoHandler),
    (r"/web/(?P<path>[A-Za-z0-9_-][A-Za-z0-9_.-]*)", web.PageHandler),
]


class GalleryApp(Application):
    def __init__(self, ctx: Any, routes: list[tuple[str, Any]] | None = None) -> None:
        self.ctx = ctx
        super().__init__(
            routes or ROUTES + prosody_share.routes(ctx.settings),
            default_handler_class=NotFoundHandler,
            compress_response=False,
            log_function=log_request,
        )
