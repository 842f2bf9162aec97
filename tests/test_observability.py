"""Access logs and Prometheus metrics."""

from __future__ import annotations

import logging
import os

from tests.helpers import assert_error, upload


async def test_access_log_line_per_request_without_secrets(client, alice, caplog):
    caplog.set_level(logging.INFO, logger="gallery.access")
    f = (await upload(client, alice, os.urandom(3000), "secret-holiday-plans.bin")).json()
    await client.get(f["file"])
    await client.get("/api/v1/files/", headers=alice, params={"media_type": "image"})
    lines = [r.getMessage() for r in caplog.records if r.name == "gallery.access"]
    assert len(lines) == 3
    upload_line, download_line, list_line = lines
    assert "route=Upload status=201 user=alice@example.org" in upload_line
    assert "route=Media slot=" in download_line and "status=200" in download_line and "bytes=3000" in download_line
    assert "route=Files status=200" in list_line
    token = alice["Authorization"].split()[1]
    for line in lines:
        assert token not in line and "secret-holiday" not in line
        assert line.startswith("id=")


async def test_request_id_header(client):
    r = await client.get("/healthz")
    assert len(r.headers["X-Request-Id"]) == 16
    assert r.headers["X-Request-Id"] != (await client.get("/healthz")).headers["X-Request-Id"]


async def test_metrics(client, alice):
    data = os.urandom(5000)
    f = (await upload(client, alice, data, "m.bin")).json()
    await client.get(f["file"])
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert "gallery_upload_bytes_total 5000.0" in text
    assert 'gallery_uploads_total{outcome="stored"} 1.0' in text
    assert "gallery_download_bytes_total 5000.0" in text
    assert 'gallery_request_seconds_count{method="POST",route="Upload",status="2xx"} 1.0' in text
    assert 'gallery_xmpp_connected{state="disabled"} 1.0' in text
    assert "gallery_db_errors_total 0.0" in text


async def test_metrics_restricted_by_address(client, service):
    service.settings.server.metrics_allow = ["10.0.0.0/8"]
    assert_error(await client.get("/metrics"), 403)


def db_commands(metrics_text: str) -> dict[str, float]:
    """gallery_db_commands_total by command name, from a /metrics page."""
    found = {}
    for line in metrics_text.splitlines():
        if line.startswith('gallery_db_commands_total{command="'):
            labels, _, value = line.rpartition(" ")
            found[labels.split('"')[1]] = float(value)
    return found


async def test_metrics_count_database_commands(client, alice):
    before = db_commands((await client.get("/metrics")).text)
    await upload(client, alice, os.urandom(4000), "counted.bin")
    r = await client.get("/api/v1/files/", headers=alice)
    assert r.status_code == 200 and r.json()["total_objects"] == 1
    after = db_commands((await client.get("/metrics")).text)
    assert "# TYPE gallery_db_commands_total counter" in (await client.get("/metrics")).text
    moved = {name: count - before.get(name, 0) for name, count in after.items()}
    assert moved.get("insert", 0) >= 1  # the file document
    assert moved.get("find", 0) >= 2  # at least the token of each request
    assert sum(moved.values()) >= 4
    assert all(count >= 0 for count in moved.values())
