"""/healthz and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from handlers.base import BaseHandler

OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        ctx = self.ctx
        report = {
            "status": "ok",
            "db": "ok" if await ctx.db.ping() else "unavailable",
            "xmpp": ctx.xmpp_state(),
            "storage": "ok" if ctx.store.check() else "unavailable",
        }
        failing = report["db"] != "ok" or report["storage"] != "ok" or report["xmpp"] not in ("connected", "disabled")
        if failing:
            report["status"] = "unavailable"
        self.reply(report, 503 if failing else 200)


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(OPENAPI.read_bytes())
