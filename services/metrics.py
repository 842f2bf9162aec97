"""Prometheus metrics: one registry per service instance (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

XMPP_STATES = ("connected", "connecting", "disconnected", "disabled")


class CommandsCollector(Collector):
    """gallery_db_commands_total{command}: the database commands sent, read from the client's
    command listener (models.db.CommandCounter) whenever /metrics is rendered."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("gallery_db_commands", "Database commands sent, by command name.", labels=("command",))
        for name, count in sorted(self.counts().items()):
            family.add_metric((name,), count)
        yield family


class Metrics:
    def __init__(self, xmpp_state: Callable[[], str], db_commands: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Histogram(
            "gallery_request_seconds",
            "Time to answer a request, by route and status class.",
            ("route", "method", "status"),
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.upload_bytes = Counter("gallery_upload_bytes", "Bytes of committed uploads.", registry=r)
        self.uploads = Counter("gallery_uploads", "Uploads by outcome.", ("outcome",), registry=r)
        self.download_bytes = Counter("gallery_download_bytes", "Bytes sent by /media/ downloads.", registry=r)
        self.downloads = Counter("gallery_downloads", "Downloads by status.", ("status",), registry=r)
        self.expired = Counter("gallery_files_expired", "Expired files the expiry sweeper removed.", registry=r)
        self.db_errors = Counter("gallery_db_errors", "Requests that failed because the database did not answer.", registry=r)
        state = Gauge("gallery_xmpp_connected", "1 while the XMPP client is connected, by state.", ("state",), registry=r)
        for name in XMPP_STATES:
            state.labels(name).set_function(lambda name=name: 1.0 if xmpp_state() == name else 0.0)
        if db_commands is not None:
            r.register(CommandsCollector(db_commands))

    def render(self) -> bytes:
        return generate_latest(self.registry)
