"""The content store a deployment configured (`storage.backend`)."""

from __future__ import annotations

from settings import Settings
from storage import ContentStore
from storage.local import LocalStore


def open_store(settings: Settings, mongodb_uri: str) -> ContentStore:
    """`local`: files under storage.path; `gridfs`: GridFS in the configured database (storage.path
    then holds only imaging's scratch files). Not prepared yet: call `prepare()` (blocking)."""
    if settings.storage.backend == "gridfs":
        from storage.gridfs import GridFSStore

        return GridFSStore(
            mongodb_uri,
            settings.mongodb.database,
            settings.storage_path,
            settings.storage.gridfs_chunk_size,
            settings.mongodb.timeout,
        )
    return LocalStore(settings.storage_path)


def close_store(store: ContentStore) -> None:
    """Let go of what the store holds (GridFS: its database client)."""
    close = getattr(store, "close", None)
    if close is not None:
        close()
