"""Fixtures: a real MongoDB wire-protocol server, the service on a loopback port, a client."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

import settings as settings_module
from models.embedded import EmbeddedMongo
from server import Service
from settings import Settings
from tests.prosody import own_prosody, prosody, xmpp_user  # noqa: F401 - fixtures: a real Prosody, test users


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI when set (a real MongoDB), else SecantusDB started for this session."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    db = EmbeddedMongo(tmp_path_factory.mktemp("secantus"))
    uri = db.start()
    yield uri
    db.stop()


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
            "GALLERY_LIMITS_UPLOADS_PER_WINDOW": "1000",
            "GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER": "100",
        },
    )
    yield s
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


@pytest.fixture
async def service(settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
    svc = Service(settings, data_dir=tmp_path / "data")
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as c:
        yield c


async def login(service: Service, jid: str) -> dict[str, str]:
    """A user with a fresh token, as the XMPP login would create them; returns auth headers."""
    assert service.ctx is not None
    await service.parts.users.ensure(jid)
    issued = await service.parts.tokens.issue(jid)
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
async def alice(service: Service) -> dict[str, str]:
    return await login(service, "alice@example.org")


@pytest.fixture
async def bob(service: Service) -> dict[str, str]:
    return await login(service, "bob@example.org")
