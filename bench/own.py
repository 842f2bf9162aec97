"""A service of a measurement's own: `python server.py` with more GALLERY_* settings, its own
embedded database and storage dir under the run's temp dir, a warm-up upload first (the first
request of each kind costs more), stopped when the measurement is done."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from bench.client import expect, upload_once
from bench.common import progress
from bench.server import Server
from bench.session import Session


async def with_service(
    session: Session, name: str, settings: dict[str, str], measure: Callable[[Session], Awaitable[dict]]
) -> dict:
    """Start `python server.py` with `settings` in `<tmp>/<name>`, run `measure` on it, stop it."""
    tmp = session.tmp / name
    server = Server(tmp, session.plan, **settings)
    other = Session(session.plan, server, tmp, session.large, session.part, None)
    shown = {k: v for k, v in settings.items() if "SECRET" not in k}
    progress(f"{name}: starting the service with {shown or 'the defaults'}")
    try:
        await asyncio.to_thread(server.start)
        await other.open_db()
        try:
            warm = await other.new_user(f"{name}-warmup")
            expect(await upload_once(other, warm, [os.urandom(4096)], 4096, "warmup.bin"), 201, "warm-up upload")
            return await measure(other)
        finally:
            await other.close_db()
    except BaseException:
        print(f"--- {name}: server.log (last lines) ---\n{server.log_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        await asyncio.to_thread(server.stop)
