"""What a measurement works with: the plan, the running service, its database, and helpers
that make what a measurement needs (a user with a token) on request; nothing is left over from
one measurement for the next."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procstat
from bench.common import ROOT
from bench.httpclient import Connection
from bench.plan import Plan
from bench.server import DATABASE, Server


@dataclass
class User:
    jid: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Session:
    plan: Plan
    server: Server
    tmp: Path
    large: Path  # a random file of plan.large_mb MB, for upload bodies
    part: Path  # a random file of plan.concurrent_mb MB
    profile_dir: Path | None
    db: Any = None  # models.db.Database on the service's database
    db_pid: int = 0

    def connection(self) -> Connection:
        host, port = self.server.address
        return Connection(host, port)

    def meters(self) -> tuple[procstat.RssSampler, procstat.CpuMeter]:
        pids = self.server.service_pids()
        return procstat.RssSampler(*pids), procstat.CpuMeter(server=pids, db=self.db_pid)

    async def open_db(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from models.db import Database

        self.db = Database(self.server.db_uri, DATABASE)
        self.db_pid = self.server.db_pid()

    async def close_db(self) -> None:
        if self.db is not None:
            await self.db.close()

    async def new_user(self, name: str) -> User:
        """A user with a token, created in the service's database by the service's own models,
        as a login does. `name` becomes bench-<name>@bench.example."""
        from models.tokens import Tokens
        from models.users import Users

        jid = f"bench-{name}@bench.example"
        await Users(self.db.users, 10**13).ensure(jid)
        issued = await Tokens(self.db.tokens, 86400).issue(jid, device="bench", client="bench/run.py")
        return User(jid, issued.token)
