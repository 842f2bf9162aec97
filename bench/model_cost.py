"""The listing routes' cost at the model, without HTTP: `python bench/model_cost.py [files] [reps]`.

One owner's files (bench/seed.py's documents) in a fresh embedded database, counters by
`Files.recount`; then each of the listing measurement's reads (page 1, the middle and the last
page newest first, the 90-day stats, files/percent/10/ page 1) repeated `reps` times in a row,
one at a time: the CPU the calling process spent (PyMongo, the counters' arithmetic), the CPU
SecantusDB spent (from /proc) and the commands sent, per call. Steadier than the HTTP benchmark
on a shared machine, for A/B runs of a change to models/files.py or models/counters.py: run it
from each checkout in turn.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import cpu_seconds
from bench.seed import document
from models.criteria import Criteria, Page
from models.db import Database
from models.embedded import EmbeddedMongo
from models.files import Files

OWNER = "many@example.org"
MODEL = {
    "_id": 0,
    "owner": OWNER,
    "slot_id": "x",
    "name": "t.bin",
    "sha256": "0" * 64,
    "md5": "0" * 32,
    "sha1": "0" * 40,
    "size": 4096,
    "media_type": "application/octet-stream",
    "kind": "file",
    "is_avatar": False,
    "context": None,
    "metadata": None,
    "thumbnail": None,
    "width": None,
    "height": None,
    "created_at": None,
    "expires_at": None,
}


async def percent_page(files: Files) -> object:
    """files/percent/10/, page 1, as FileManager.oldest_page makes it (or as the earlier
    versions did: the counts read, then the target, then a fresh page)."""
    if "percent" in inspect.signature(files.oldest_reaching).parameters:
        known: dict = {}
        chosen = await files.oldest_reaching(OWNER, Criteria(), False, percent=10, known=known)
        return await files.page(OWNER, chosen, Page(1, 50), False, known)
    used = sum(bucket["used"] for bucket in (await files.counts(OWNER)).values())
    chosen = await files.oldest_reaching(OWNER, Criteria(), False, -(-used * 10 // 100))
    return await files.page(OWNER, chosen, Page(1, 50), False)


async def main(count: int, reps: int) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="gallery-model-cost-"))
    embedded = EmbeddedMongo(scratch / "db")
    embedded.start()
    assert embedded.process is not None
    db = Database(embedded.uri, "cost")
    try:
        await db.ensure_indexes()
        rng, now = random.Random(1), dt.datetime.now(dt.UTC).replace(microsecond=0)
        docs = [document(MODEL, OWNER, i, i + 1, rng, now) for i in range(count)]
        for start in range(0, len(docs), 1000):
            await db.files.insert_many(docs[start : start + 1000])
        files = Files(db.files)
        await files.recount(OWNER)
        pages = -(-count // 50)
        today = now.date()
        gte = dt.datetime.combine(today - dt.timedelta(days=180), dt.time(), dt.UTC)
        lte = dt.datetime.combine(today - dt.timedelta(days=91), dt.time(23, 59, 59, 999000), dt.UTC)
        reads: dict[str, Callable[[], Awaitable[object]]] = {
            "page 1": lambda: files.page(OWNER, Criteria(), Page(1, 50), False),
            "middle page": lambda: files.page(OWNER, Criteria(), Page((pages + 1) // 2, 50), False),
            "last page": lambda: files.page(OWNER, Criteria(), Page(pages, 50), False),
            "90-day stats": lambda: files.usage(OWNER, Criteria(date_gte=gte, date_lte=lte)),
            "percent/10 page 1": lambda: percent_page(files),
        }
        sent: list[str] = []
        db.commands.count = sent.append
        for name, read in reads.items():
            for _ in range(10):  # warm up
                await read()
            sent.clear()
            mine, theirs = time.process_time(), cpu_seconds(embedded.process.pid)
            for _ in range(reps):
                await read()
            mine, theirs = time.process_time() - mine, cpu_seconds(embedded.process.pid) - theirs
            print(
                f"{name:18s} caller {1000 * mine / reps:.2f} ms  SecantusDB {1000 * theirs / reps:.2f} ms  "
                f"commands {len(sent) / reps:.1f}",
                flush=True,
            )
    finally:
        await db.close()
        embedded.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, int(sys.argv[2]) if len(sys.argv) > 2 else 300))
