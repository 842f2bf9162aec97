"""What /healthz reports: each dependency's state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from models.db import Database
from storage import ContentStore


class HealthManager:
    def __init__(
        self,
        db: Database,
        store: ContentStore,
        xmpp_state: Callable[[], str],
        component_state: Callable[[], str] = lambda: "disabled",
    ) -> None:
        self._db = db
        self._store = store
        self.xmpp_state = xmpp_state
        self.component_state = component_state

    async def report(self) -> tuple[dict[str, str], bool]:
        """The report and whether every part is well."""
        db_ok, storage_ok = await asyncio.gather(self._db.ping(), asyncio.to_thread(self._store.check))
        report = {
            "status": "ok",
            "db": "ok" if db_ok else "unavailable",
            "xmpp": self.xmpp_state(),
            "component": self.component_state(),  # the XEP-0363 component: 503 when configured and down
            "storage": "ok" if storage_ok else "unavailable",
        }
        healthy = db_ok and storage_ok and report["xmpp"] in ("connected", "disabled")
        healthy = healthy and report["component"] in ("connected", "disabled")
        if not healthy:
            report["status"] = "unavailable"
        return report, healthy
