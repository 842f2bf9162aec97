"""The GridFS content store's own documents (storage/gridfs.py moves the bytes).

In the bucket `<prefix>.files`, every GridFS file carries `metadata.kind`:
- "content": `filename` = the sha256;
- "derived": `filename` = "<sha256>/<name>", `metadata.sha256` = the content it was made from;
- "staging": an upload in flight (filename "staging-<id>"), renamed to content when committed.

`<prefix>.staging` has one document per sink opened (`_id` = its GridFS file id, `created`), removed
when it is committed or discarded: GridFS writes a file's chunks before its files document, so an
upload cut off by a crash leaves chunks that only this record finds.
Blocking (a synchronous client): called from worker threads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.database import Database

CONTENT = "content"
DERIVED = "derived"
STAGING = "staging"


class GridMeta:
    def __init__(self, db: Database, prefix: str) -> None:
        self.files: Collection = db[f"{prefix}.files"]
        self.chunks: Collection = db[f"{prefix}.chunks"]
        self.staging: Collection = db[f"{prefix}.staging"]

    def ensure_indexes(self) -> None:
        # the two GridFS's drivers create, and the fields this store queries
        self.files.create_indexes(
            [
                IndexModel([("filename", ASCENDING), ("uploadDate", ASCENDING)]),
                IndexModel([("metadata.kind", ASCENDING)]),
                IndexModel([("metadata.sha256", ASCENDING)]),
            ]
        )
        self.chunks.create_indexes([IndexModel([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)])
        self.staging.create_indexes([IndexModel([("created", ASCENDING)])])

    # -- staging ------------------------------------------------------------------------
    def staging_opened(self, file_id: Any, now: dt.datetime) -> None:
        self.staging.insert_one({"_id": file_id, "created": now})

    def staging_closed(self, file_id: Any) -> None:
        self.staging.delete_one({"_id": file_id})

    def stale_staging(self, cutoff: dt.datetime) -> list[Any]:
        return [doc["_id"] for doc in self.staging.find({"created": {"$lte": cutoff}}, {"_id": 1})]

    def insert_chunk(self, file_id: Any, n: int, data: bytes | memoryview) -> None:
        self.chunks.insert_one({"files_id": file_id, "n": n, "data": bytes(data)})

    def insert_file(self, file_id: Any, filename: str, length: int, chunk_size: int, metadata: dict, now: dt.datetime) -> None:
        """The files document that makes written chunks a GridFS file (the driver's format)."""
        self.files.insert_one(
            {
                "_id": file_id,
                "filename": filename,
                "length": length,
                "chunkSize": chunk_size,
                "uploadDate": now,
                "metadata": metadata,
            }
        )

    def kind_of(self, file_id: Any) -> str | None:
        doc = self.files.find_one({"_id": file_id}, {"metadata.kind": 1})
        return None if doc is None else (doc.get("metadata") or {}).get("kind")

    def delete_chunks(self, file_id: Any) -> None:
        """Chunks of a file that has no files document (a cut-off upload)."""
        self.chunks.delete_many({"files_id": file_id})

    # -- content ------------------------------------------------------------------------
    def find(self, filename: str, kind: str) -> dict | None:
        """The GridFS files document of a stored content or derived image."""
        return self.files.find_one({"filename": filename, "metadata.kind": kind}, {"length": 1, "chunkSize": 1})

    def make_content(self, file_id: Any, sha256: str) -> bool:
        """A committed staging file becomes the content `sha256` (rename)."""
        result = self.files.update_one(
            {"_id": file_id, "metadata.kind": STAGING}, {"$set": {"filename": sha256, "metadata.kind": CONTENT}}
        )
        return result.matched_count == 1

    def chunk(self, file_id: Any, n: int) -> bytes | None:
        """The n-th chunk of a file: a point read on the (files_id, n) index."""
        doc = self.chunks.find_one({"files_id": file_id, "n": n}, {"data": 1})
        return None if doc is None else bytes(doc["data"])

    def ids_of(self, sha256: str) -> list[Any]:
        """Every GridFS file of the content, and its derived images."""
        ids = [doc["_id"] for doc in self.files.find({"filename": sha256, "metadata.kind": CONTENT}, {"_id": 1})]
        ids += [doc["_id"] for doc in self.files.find({"metadata.sha256": sha256}, {"_id": 1})]
        return ids

    def ids_named(self, filename: str, kind: str) -> list[Any]:
        return [doc["_id"] for doc in self.files.find({"filename": filename, "metadata.kind": kind}, {"_id": 1})]

    def contents(self) -> set[str]:
        return {doc["filename"] for doc in self.files.find({"metadata.kind": CONTENT}, {"filename": 1})}

    def derived_contents(self) -> set[str]:
        return {doc["metadata"]["sha256"] for doc in self.files.find({"metadata.kind": DERIVED}, {"metadata.sha256": 1})}
