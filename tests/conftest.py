"""Fixtures: a real MongoDB wire-protocol server, the service on a loopback port (`service`, or
`make_service(**overrides)` for one with other settings), its parts without the service
(`parts`), a client, users with tokens."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

import settings as settings_module
from models.db import Database
from models.embedded import EmbeddedMongo
from server import Service
from services.context import Parts
from settings import Settings
from storage.backends import close_store, open_store
from tests.browser import chromium, page  # noqa: F401 - fixtures: a real headless Chromium
from tests.helpers import login, override, stop_process
from tests.prosody import own_prosody, prosody, xmpp_user  # noqa: F401 - fixtures: a real Prosody, test users

STORAGE_BACKEND = os.environ.get("GALLERY_TEST_STORAGE_BACKEND", "local")


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI when set (a real MongoDB), else SecantusDB started for this session."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    db = EmbeddedMongo(tmp_path_factory.mktemp("secantus"))
    uri = db.start()
    yield uri
    stop_process(db.process, grace=20)


@pytest.fixture
def settings(tmp_path: Path, mongo_uri: str) -> Iterator[Settings]:
    name = f"test_{secrets.token_hex(6)}"
    s = settings_module.load(
        Path("/nonexistent"),
        env={
            "GALLERY_SERVER_PORT": "0",
            "GALLERY_MONGODB_URI": mongo_uri,
            "GALLERY_MONGODB_DATABASE": name,
            "GALLERY_STORAGE_PATH": str(tmp_path / "files"),
            # the whole suite against the GridFS store: GALLERY_TEST_STORAGE_BACKEND=gridfs
            "GALLERY_STORAGE_BACKEND": STORAGE_BACKEND,
            "GALLERY_LIMITS_UPLOADS_PER_WINDOW": "1000",
            "GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER": "100",
        },
    )
    yield s
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


class ServiceFactory:
    """`await make_service(**overrides)`: a started Service on the test's settings with
    `overrides` applied (see tests.helpers.override); `await make_service.stop(svc)` stops one
    before the test ends; whatever still runs is stopped at teardown."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.running: list[Service] = []
        self.made = 0

    async def __call__(self, **overrides: Any) -> Service:
        data_dir = self.tmp_path / ("data" if not self.made else f"data{self.made}")
        self.made += 1
        svc = Service(override(self.settings, **overrides), data_dir=data_dir)
        await svc.start()
        self.running.append(svc)
        return svc

    async def stop(self, svc: Service) -> None:
        if svc in self.running:
            self.running.remove(svc)
            await svc.stop()

    async def close(self) -> None:
        while self.running:
            await self.stop(self.running[-1])


@pytest.fixture
async def make_service(settings: Settings, tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    factory = ServiceFactory(settings, tmp_path)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def service(make_service: ServiceFactory) -> Service:
    return await make_service()


@pytest.fixture
async def parts(settings: Settings) -> AsyncIterator[Parts]:
    """The database and store of the test's settings without a service: for tests of the
    managers and models alone, and for setting up and checking a `python server.py` run."""
    db = Database(settings.mongodb.uri, settings.mongodb.database, settings.mongodb.timeout)
    await db.ensure_indexes()
    store = open_store(settings, settings.mongodb.uri)
    await asyncio.to_thread(store.prepare)
    try:
        yield Parts(settings=settings, db=db, store=store)
    finally:
        close_store(store)
        await db.close()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as c:
        yield c


@pytest.fixture
async def alice(service: Service) -> dict[str, str]:
    return await login(service, "alice@example.org")


@pytest.fixture
async def bob(service: Service) -> dict[str, str]:
    return await login(service, "bob@example.org")
