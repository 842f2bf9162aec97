"""/healthz and the OpenAPI document."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST

from handlers.base import BaseHandler
from services.errors import Forbidden

OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        report, healthy = await self.ctx.health.report()
        self.reply(report, 200 if healthy else 503)


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
