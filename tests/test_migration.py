"""A database written by the version before integer ids, kinds and sha1 is brought over once."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
from bson import ObjectId
from pymongo import IndexModel

from models.db import INDEXES, OBSOLETE, Database
from services.fsck import fsck
from tests.helpers import GIF, login, opaque, sha256, upload, wav


async def _as_earlier_version(service, doc_id: int) -> ObjectId:
    """Rewrite one file as the earlier version stored it: an ObjectId, no kind, no sha1, an
    avatar without a context."""
    files = service.parts.db.files
    doc = await files.find_one({"_id": doc_id})
    await files.delete_one({"_id": doc_id})
    old = ObjectId()
    for key in ("kind", "sha1"):
        doc.pop(key, None)
    if doc.get("is_avatar"):
        doc["context"] = None
    await files.insert_one({**doc, "_id": old})
    return old


async def test_fsck_gives_integer_ids_kinds_and_sha1(client, service):
    alice = await login(service, "alice@example.org")
    content = opaque(2000)
    made = [
        (await upload(client, alice, content, "doc.bin")).json(),
        (await upload(client, alice, wav(), "voice.wav", context="voice")).json(),
        (await upload(client, alice, GIF, "a.gif")).json(),
    ]
    for f in made:
        await _as_earlier_version(service, f["id"])

    report = await fsck(service.parts)
    assert report.ids_given == 3 and report.sha1_added == 3 and report.repaired
    docs = await service.parts.db.files.find({"owner": "alice@example.org"}).to_list()
    assert all(isinstance(d["_id"], int) for d in docs)
    assert sorted(d["kind"] for d in docs) == ["file", "image", "voice"]
    assert {d["slot_id"] for d in docs} == {f["slot_id"] for f in made}  # links unchanged
    # the SHA-1 slot check now finds the old file; the links still serve
    r = await client.get("/api/v1/files/slot/", headers=alice, params={"hash": hashlib.sha1(content).hexdigest(), "size": 2000})
    assert r.json()["sha256"] == sha256(content)
    for f in made:
        assert (await client.get(f["file"])).status_code == 200
    stats = (await client.get("/api/v1/files/stats/", headers=alice)).json()
    # the slot check made a second link to the old file's content
    assert stats["voices"]["count"] == 1 and stats["images"]["count"] == 1 and stats["files"]["count"] == 2
    again = await fsck(service.parts)
    assert again.ids_given == 0 and again.sha1_added == 0


async def test_start_up_finishes_an_interrupted_migration(client, service, make_service):
    alice = await login(service, "alice@example.org")
    f = (await upload(client, alice, opaque(500), "x.bin")).json()
    old = await _as_earlier_version(service, f["id"])
    # a crash after the copy was inserted, before the original was removed
    moved = await service.parts.files.migrate(service.parts.file_ids)
    assert moved == 1
    files = service.parts.db.files
    copy = await files.find_one({"owner": "alice@example.org"})
    await files.update_one({"_id": copy["_id"]}, {"$set": {"slot_id": "migrating:" + str(old), "slot": f["slot_id"]}})
    await files.insert_one({**copy, "_id": old, "slot_id": f["slot_id"]})

    await make_service(server={"port": 0})  # a second service on the same database: its start-up migrates
    assert await files.count_documents({"owner": "alice@example.org"}) == 1
    doc = await files.find_one({"owner": "alice@example.org"})
    assert doc["_id"] == copy["_id"] and doc["slot_id"] == f["slot_id"] and "slot" not in doc


async def test_start_up_drops_the_indexes_no_query_uses(client, service, make_service):
    """A database an earlier version indexed: start-up drops the indexes of OBSOLETE (whatever
    their names), keeps every one of INDEXES, twice over without error, and the service reads
    and writes as before (fsck too)."""
    db = service.parts.db
    alice = await login(service, "alice@example.org")
    before = (await upload(client, alice, opaque(300), "a.bin")).json()
    for name, keys in OBSOLETE.items():  # under names of their own, and users' by its default one
        await db.db[name].create_indexes(
            [IndexModel(key, **({} if name == "users" else {"name": f"old_{i}"})) for i, key in enumerate(keys)]
        )

    def keys_of(info: dict) -> set[tuple]:
        return {tuple((field, int(d)) for field, d in index["key"]) for index in info.values()}

    old = {name: keys_of(await db.db[name].index_information()) for name in OBSOLETE}
    assert all({tuple(key) for key in keys} <= old[name] for name, keys in OBSOLETE.items())

    for round in range(2):  # every start-up runs it; the second finds nothing to drop
        again = await make_service(server={"port": 0})
        for name, keys in OBSOLETE.items():
            have = keys_of(await again.parts.db.db[name].index_information())
            assert not {tuple(key) for key in keys} & have, name
        for name, indexes in INDEXES.items():
            have = keys_of(await again.parts.db.db[name].index_information())
            assert {tuple((f, int(d)) for f, d in index.document["key"].items()) for index in indexes} <= have, name
        if round:
            assert await again.parts.db.drop_obsolete_indexes() == []
            break
        await make_service.stop(again)

    async with httpx.AsyncClient(base_url=again.url, timeout=60) as http:
        assert (await http.get(before["file"])).status_code == 200
        alice = await login(again, "alice@example.org")
        after = (await upload(http, alice, opaque(400), "b.bin")).json()
        listed = (await http.get("/api/v1/files/", headers=alice)).json()
        assert {f["id"] for f in listed["items"]} == {before["id"], after["id"]}
    report = await fsck(again.parts)
    assert report.counts_fixed == 0 and report.refs_fixed == 0 and report.blob_docs_added == 0


async def test_processes_starting_together_drop_each_obsolete_index_once(settings):
    """Several processes run the drop at once: each index goes once, and the one that finds it
    gone already (IndexNotFound) carries on."""
    dbs = [Database(settings.mongodb.uri, settings.mongodb.database) for _ in range(3)]
    try:
        for name, keys in OBSOLETE.items():
            await dbs[0].db[name].create_indexes([IndexModel(key) for key in keys])
        dropped = await asyncio.gather(*(db.drop_obsolete_indexes() for db in dbs))
        every = [index for one in dropped for index in one]
        assert sorted(every) == sorted(set(every)) and len(every) == sum(len(keys) for keys in OBSOLETE.values())
        assert await dbs[1].drop_obsolete_indexes() == []
    finally:
        for db in dbs:
            await db.close()


async def test_start_up_survives_a_non_numeric_index_on_a_collection_with_obsolete_ones(parts):
    """Regression: an index whose key is not a direction, on a collection OBSOLETE names (a
    `{owner: "hashed"}` shard key or a text index on a real MongoDB; SecantusDB takes a
    2dsphere), made every start-up fail: the drop read each index's key with int(direction)."""
    await parts.db.db.files.create_indexes([IndexModel([("place", "2dsphere")])])
    await parts.db.ensure_indexes()
    keys = [index["key"] async for index in await parts.db.db.files.list_indexes()]
    assert {"place": "2dsphere"} in [dict(key) for key in keys]
