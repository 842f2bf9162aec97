"""Faults: a full storage volume, a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from models.embedded import EmbeddedMongo
from tests.conftest import STORAGE_BACKEND
from tests.helpers import assert_error, login, staging, stop_process, upload, wait_until


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


@pytest.mark.skipif(STORAGE_BACKEND == "gridfs", reason="a full local volume; the GridFS store writes to the database")
async def test_full_volume_gives_507_and_leaves_nothing(make_service, small_volume):
    service = await make_service(storage={"path": str(small_volume)})
    headers = await login(service, "full@example.org")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        r = await upload(client, headers, os.urandom(6 * 1024 * 1024), "too-big-for-the-disk.bin")
        assert_error(r, 507)
        assert staging(service.parts.store) == []
        assert (await client.get("/api/v1/account/quota", headers=headers)).json()["used"] == 0
        listed = (await client.get("/api/v1/files", headers=headers)).json()
        assert listed["total_objects"] == 0
        # the service goes on: what fits is stored
        ok = await upload(client, headers, os.urandom(500_000), "fits.bin")
        assert ok.status_code == 201
        assert (await client.get(ok.json()["file"])).status_code == 200


@pytest.mark.slow
async def test_database_outage_gives_503_and_recovers(make_service, tmp_path):
    db = EmbeddedMongo(tmp_path / "db")
    uri = db.start()
    port = db.port
    try:
        service = await make_service(mongodb={"uri": uri, "timeout": 1})
        headers = await login(service, "outage@example.org")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            assert (await client.get("/api/v1/files", headers=headers)).status_code == 200
            await asyncio.to_thread(stop_process, db.process, 20)
            r = await client.get("/api/v1/files", headers=headers)
            body = assert_error(r, 503)
            assert body["error"] == "database unavailable"
            assert_error(await upload(client, headers, b"while down", "x"), 503)
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["db"] == "unavailable"
            metrics = (await client.get("/metrics")).text
            assert "gallery_db_errors_total 0.0" not in metrics
            if STORAGE_BACKEND != "gridfs":  # (GridFS's staging is in the database: looked at below)
                assert staging(service.parts.store) == []

            db.port = port  # the same address: the driver reconnects by itself
            await asyncio.to_thread(db.start)

            async def healthy() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_until(healthy, 20, "the service to see the database again")
            assert staging(service.parts.store) == []  # nothing was left of the refused upload
            assert (await client.get("/api/v1/files", headers=headers)).status_code == 200
            assert (await upload(client, headers, b"after", "y")).status_code == 201
    finally:
        await make_service.close()  # the service goes first, as it would in production
        stop_process(db.process, 20)
