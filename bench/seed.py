"""Many files for one owner, inserted straight into the service's database (the service's upload
API is far too slow for 100 000 of them).

Each document is a copy of one the service itself wrote for a small upload (so its shape is
exactly the service's), with its own id (from the service's id sequence), slot, name, hashes,
size, type, kind and date (spread over a year). The owner's `used` is then set to the sum of the sizes, and the per-owner counters
(`file_counts`) are recomputed by the code fsck runs (`Files.recount`), so they are what the
service would have kept."""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import time

from bench.client import expect, upload_once
from bench.common import BenchError, progress
from bench.session import Session, User

BUCKET_KINDS = [
    ("image/jpeg", "jpg", 0.45),
    ("image/png", "png", 0.10),
    ("video/mp4", "mp4", 0.10),
    ("audio/ogg", "ogg", 0.15),
    ("application/pdf", "pdf", 0.10),
    ("application/octet-stream", "bin", 0.10),
]
MEDIA_TYPES = [media_type for media_type, _, _ in BUCKET_KINDS]
WEIGHTS = [weight for _, _, weight in BUCKET_KINDS]
EXTENSIONS = {media_type: extension for media_type, extension, _ in BUCKET_KINDS}
SEED = 20261122
BATCH = 1000


async def template(session: Session) -> dict:
    """A file document the service wrote: a small upload by a user of its own."""
    user = await session.new_user("seed-template")
    expect(await upload_once(session, user, [os.urandom(4096)], 4096, "template.bin"), 201, "template upload")
    doc = await session.db.files.find_one({"owner": user.jid, "is_avatar": False})
    if doc is None:
        raise BenchError("no file document to copy")
    return doc


def document(model: dict, owner: str, number: int, file_id: int, rng: random.Random, now: dt.datetime) -> dict:
    """Copy number `number` of `model` for `owner`: its own id, slot, name, content, type and date."""
    from models.files import kind_of

    media_type = rng.choices(MEDIA_TYPES, WEIGHTS)[0]
    context = "voice" if media_type.startswith("audio/") else model.get("context")
    image = media_type.startswith(("image/", "video/"))
    width, height = rng.choice([(4000, 3000), (1920, 1080), (1280, 960)]) if image else (None, None)
    doc = model | {
        "_id": file_id,
        "owner": owner,
        "slot_id": secrets.token_urlsafe(18),
        "name": f"file-{number:06d}.{EXTENSIONS[media_type]}",
        "sha256": rng.randbytes(32).hex(),
        "md5": rng.randbytes(16).hex(),
        "size": rng.randint(1_000, 5_000_000),
        "media_type": media_type,
        "kind": kind_of(media_type, context),
        "is_avatar": False,
        "context": context,
        "metadata": None,
        "width": width,
        "height": height,
        "thumbnail": {"file": "thumb.jpg", "media_type": "image/jpeg", "width": 256, "height": 256} if image else None,
        "created_at": now - dt.timedelta(seconds=rng.randint(0, 365 * 86400), milliseconds=rng.randint(0, 999)),
    }
    if "sha1" in model:
        doc["sha1"] = rng.randbytes(20).hex()
    return doc


async def documents(session: Session, model: dict, owner: str, first: int, count: int) -> list[dict]:
    """Copies number `first` to `count - 1` of `model` for `owner`, with ids from the service's
    own sequence (one block of them, which the service then never hands out)."""
    from models.sequences import IdSequence

    ids = IdSequence(session.db.db["sequences"], "files", block=max(1, count - first))
    rng = random.Random(SEED + first)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    docs = [document(model, owner, number, await ids.next(), rng, now) for number in range(first, count)]
    if docs and (differ := set(docs[0]) ^ set(model)):
        raise BenchError(f"seeded files differ from the service's in {sorted(differ)}: bench/seed.py needs updating")
    return docs


async def grow(session: Session, user: User, have: dict, count: int) -> dict:
    """Add files to `user`'s until there are `count`; `have` is what grow returned last time
    (or {"count": 0, "used": 0, "images": 0}). Returns {"count", "used", "images"}, as GET
    files/stats/ must report them."""
    from models.files import Files

    docs = await documents(session, await template(session), user.jid, have["count"], count)
    started = time.perf_counter()
    for start in range(0, len(docs), BATCH):
        await session.db.files.insert_many(docs[start : start + BATCH], ordered=False)
    inserted = time.perf_counter()
    used = have["used"] + sum(doc["size"] for doc in docs)
    await session.db.users.update_one({"_id": user.jid}, {"$set": {"used": used}})
    await Files(session.db.files).recount(user.jid)
    progress(
        f"seeded {len(docs)} files: inserted in {inserted - started:.1f} s, counters in {time.perf_counter() - inserted:.1f} s"
    )
    images = have["images"] + sum(1 for doc in docs if doc["media_type"].startswith("image/"))
    return {"count": count, "used": used, "images": images}
