"""/healthz and the OpenAPI document."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST

from handlers.base import BaseHandler
from services.errors import Forbidden

OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        ctx = self.ctx
        report = {
            "status": "ok",
            "db": "ok" if await ctx.db.ping() else "unavailable",
            "xmpp": ctx.xmpp_state(),
            "storage": "ok" if await asyncio.to_thread(ctx.store.check) else "unavailable",
        }
        failing = report["db"] != "ok" or report["storage"] != "ok" or report["xmpp"] not in ("connected", "disabled")
        if failing:
            report["status"] = "unavailable"
        self.reply(report, 503 if failing else 200)


class MetricsHandler(BaseHandler):
    """Prometheus metrics, for the networks in server.metrics_allow only."""

    def get(self) -> None:
        address = ipaddress.ip_address(self.request.remote_ip)
        allowed = (ipaddress.ip_network(n, strict=False) for n in self.ctx.settings.server.metrics_allow)
        if not any(address in network for network in allowed):
            raise Forbidden("metrics are not available from this address")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.ctx.metrics.render())


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(OPENAPI.read_bytes())
