"""Faults: a full storage volume, a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from models.embedded import EmbeddedMongo
from server import Service
from tests.conftest import login
from tests.helpers import assert_error, upload


@pytest.fixture
def small_volume(tmp_path: Path):
    """A 4 MiB tmpfs as the storage volume (needs root to mount; skipped where that is refused)."""
    mount = tmp_path / "volume"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_volume_gives_507_and_leaves_nothing(settings, small_volume, tmp_path):
    settings.storage.path = str(small_volume)
    service = Service(settings, data_dir=tmp_path / "data")
    await service.start()
    try:
        headers = await login(service, "full@example.org")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            r = await upload(client, headers, os.urandom(6 * 1024 * 1024), "too-big-for-the-disk.bin")
            assert_error(r, 507)
            assert list((small_volume / "tmp").iterdir()) == []
            assert (await client.get("/api/v1/account/quota", headers=headers)).json()["used"] == 0
            listed = (await client.get("/api/v1/files", headers=headers)).json()
            assert listed["total_objects"] == 0
            # the service goes on: what fits is stored
            ok = await upload(client, headers, os.urandom(500_000), "fits.bin")
            assert ok.status_code == 201
            assert (await client.get(ok.json()["file"])).status_code == 200
    finally:
        await service.stop()


@pytest.mark.slow
async def test_database_outage_gives_503_and_recovers(settings, tmp_path):
    db = EmbeddedMongo(tmp_path / "db")
    uri = db.start()
    port = db.port
    settings.mongodb.uri = uri
    settings.mongodb.timeout = 1
    service = Service(settings, data_dir=tmp_path / "data")
    await service.start()
    try:
        headers = await login(service, "outage@example.org")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            assert (await client.get("/api/v1/files", headers=headers)).status_code == 200
            await asyncio.to_thread(db.stop)
            r = await client.get("/api/v1/files", headers=headers)
            body = assert_error(r, 503)
            assert body["error"] == "database unavailable"
            assert_error(await upload(client, headers, b"while down", "x"), 503)
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["db"] == "unavailable"
            metrics = (await client.get("/metrics")).text
            assert "gallery_db_errors_total 0.0" not in metrics
            assert list((service.settings.storage_path / "tmp").iterdir()) == []

            db.port = port  # the same address: the driver reconnects by itself
            await asyncio.to_thread(db.start)
            for _ in range(100):
                if (await client.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await client.get("/api/v1/files", headers=headers)).status_code == 200
            assert (await upload(client, headers, b"after", "y")).status_code == 201
    finally:
        await service.stop()
        db.stop()
