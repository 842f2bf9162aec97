"""Prometheus metrics: one registry per service instance (no global state).

With several worker processes (server.processes), the supervisor sets PROMETHEUS_MULTIPROC_DIR
before it forks: every worker then keeps its counters and histograms in files there, and a scrape
of any worker reads and sums them all (prometheus-client's multiprocess mode), the database
commands too. The XMPP state is the answering worker's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

XMPP_STATES = ("connected", "connecting", "disconnected", "disabled")


class XmppStateCollector(Collector):
    """gallery_xmpp_connected{state}: 1 for this process's current XMPP client state."""

    def __init__(self, xmpp_state: Callable[[], str]) -> None:
        self.xmpp_state = xmpp_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("gallery_xmpp_connected", "1 while the XMPP client is connected, by state.", labels=("state",))
        current = self.xmpp_state()
        for name in XMPP_STATES:
            gauge.add_metric((name,), 1.0 if current == name else 0.0)
        yield gauge


class Metrics:
    def __init__(self, xmpp_state: Callable[[], str]) -> None:
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
        self.db_commands = Counter("gallery_db_commands", "Database commands sent, by command name.", ("command",), registry=r)
        self.xmpp = XmppStateCollector(xmpp_state)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is None:
            r.register(self.xmpp)

    def count_command(self, name: str) -> None:
        """One database command sent (models.db.CommandCounter calls it)."""
        self.db_commands.labels(name).inc()

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # every worker's files, summed; this worker's XMPP state
        every = CollectorRegistry()
        MultiProcessCollector(every, self.multiprocess_dir)
        every.register(self.xmpp)
        return generate_latest(every)
