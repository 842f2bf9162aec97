"""Hostile and broken clients: slow, vanishing, oversized, or speaking odd but legal HTTP."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from server import Service
from tests.helpers import (
    assert_error,
    login,
    multipart,
    server_env,
    staging,
    start_server,
    stop_process,
    upload,
    wait_until,
)


async def raw(service: Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", service.settings.server.port)


def upload_head(headers: dict, length: int | None, boundary: str = "B", extra: str = "") -> bytes:
    lines = ["POST /api/v1/files/upload/ HTTP/1.1", "Host: test", f"Content-Type: multipart/form-data; boundary={boundary}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


PART_START = b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'


async def read_status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 10)
    return int(line.split()[1])


async def test_disconnect_mid_upload_leaves_nothing(service, alice, client):
    _reader, writer = await raw(service)
    writer.write(upload_head(alice, 10_000_000) + PART_START + os.urandom(2_000_000))
    await writer.drain()
    await wait_until(lambda: staging(service.parts.store), message="the upload's bytes in staging")
    writer.close()
    await wait_until(lambda: not staging(service.parts.store), message="the staging area to be emptied")
    await wait_until(lambda: not service.ctx.files.gate.active, message="the upload to leave the gate")
    assert (await client.get("/api/v1/account/quota", headers=alice)).json()["used"] == 0


async def test_concurrent_uploads_are_bounded(service, alice, bob):
    gate = service.ctx.files.gate
    gate.per_user, gate.total = 2, 3
    held = []
    for _ in range(2):
        _reader, writer = await raw(service)
        writer.write(upload_head(alice, 1_000_000) + PART_START + b"x" * 1000)
        await writer.drain()
        held.append(writer)
    await wait_until(lambda: gate.active["alice@example.org"] == 2, message="alice's two uploads in the gate")
    async with httpx.AsyncClient(base_url=service.url) as c:
        r = await upload(c, alice, b"third", "c")
        assert_error(r, 429)
        assert r.headers["Retry-After"] == "1"
        _reader, writer = await raw(service)
        writer.write(upload_head(bob, 1_000_000) + PART_START)
        await writer.drain()
        held.append(writer)
        await wait_until(lambda: gate.active.total() == 3, message="three uploads in the gate")
        r = await upload(c, await login(service, "carol@example.org"), b"fourth", "d")
        assert_error(r, 503)
        assert r.headers["Retry-After"] == "1"
        for w in held:
            w.close()
        await wait_until(lambda: not gate.active, message="the gate to empty")
        assert (await upload(c, alice, b"now it fits", "e")).status_code == 201


async def test_chunked_upload_without_content_length(client, alice):
    headers, body = multipart([("file", "chunked.bin", b"a" * 300_000)])

    async def chunks():
        for i in range(0, len(body), 7777):
            yield body[i : i + 7777]

    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=chunks())
    assert r.status_code == 201, r.text
    assert r.json()["size"] == 300_000


async def test_file_part_without_filename(client, alice):
    headers, body = multipart([("file", None, b"anonymous bytes")])
    r = await client.post("/api/v1/files/upload/", headers={**alice, **headers}, content=body)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "file"


async def test_expect_100_continue(service, alice):
    _headers, body = multipart([("file", "e.bin", b"expected")], boundary="B")
    reader, writer = await raw(service)
    writer.write(upload_head(alice, len(body), extra="Expect: 100-continue\r\n"))
    await writer.drain()
    assert await read_status(reader) == 100
    await reader.readline()
    writer.write(body)
    await writer.drain()
    assert await read_status(reader) == 201
    writer.close()
    # refused before the body: the error comes instead of 100 Continue
    reader, writer = await raw(service)
    writer.write(upload_head({"Authorization": "Bearer wrong"}, len(body), extra="Expect: 100-continue\r\n"))
    await writer.drain()
    assert await read_status(reader) == 401
    writer.close()


async def test_bad_boundaries(client, alice):
    url = "/api/v1/files/upload/"
    for content_type, body in (
        ("multipart/form-data; boundary=", b"--\r\n"),
        ("multipart/form-data; boundary=B", b"no boundary here at all"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nunterminated',
        ),
        ("multipart/form-data; boundary=B", b"--B\r\nbroken header line\r\n\r\nx\r\n--B--\r\n"),
    ):
        r = await client.post(url, headers={**alice, "Content-Type": content_type}, content=body)
        assert_error(r, 400)


async def test_oversized_headers_refused(client, alice, service):
    """The HTTP layer drops the connection without reading further; the service carries on."""
    big = {**alice, "X-Big": "a" * (service.settings.server.max_header_size + 10)}
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/api/v1/files/", headers=big)
    assert (await client.get("/api/v1/files/", headers=alice)).status_code == 200


async def test_client_that_stops_reading_a_download(service, alice, client):
    data = os.urandom(40 * 1024 * 1024)
    f = (await upload(client, alice, data, "big.bin")).json()
    _reader, writer = await raw(service)
    path = f["file"].split(service.url, 1)[1]
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(1.5)  # the client reads nothing
    buffered = [len(conn.stream._write_buffer) for conn in service.http._connections if conn.stream]
    assert buffered and max(buffered) <= 4 * 1024 * 1024, buffered
    writer.close()


@pytest.fixture
async def strict_service(make_service) -> Service:
    return await make_service(server={"idle_connection_timeout": 1, "body_timeout": 1})


async def test_slow_headers_are_cut_off(strict_service):
    reader, writer = await raw(strict_service)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    closed = False
    for _ in range(8):
        await asyncio.sleep(0.5)
        try:
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 0.01) == b""
        except TimeoutError:
            continue
        except OSError:
            closed = True
        if closed:
            break
    assert closed, "the server kept a connection whose headers never ended"


async def test_slow_body_is_cut_off(strict_service):
    headers = await login(strict_service, "slow@example.org")
    reader, writer = await raw(strict_service)
    writer.write(upload_head(headers, 5_000_000) + PART_START + b"x" * 100_000)
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)  # the server gives up and closes
    await wait_until(lambda: not staging(strict_service.parts.store), message="the staging area to be emptied")
    await wait_until(lambda: not strict_service.ctx.files.gate.active, message="the upload to leave the gate")


async def test_sigterm_drains_uploads_in_flight(settings, parts, tmp_path):
    """SIGTERM: the upload in flight finishes, new ones are refused, then exit status 0."""
    env = server_env(settings)
    proc, url = start_server(env, tmp_path / "server.log")
    try:
        headers = await login(parts, "d@example.org")
        host, port = url.removeprefix("http://").split(":")
        payload = os.urandom(3_000_000)
        _, body = multipart([("file", "late.bin", payload)], boundary="B")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(upload_head(headers, len(body)) + body[:1_000_000])
        await writer.drain()
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=url) as c:
            try:
                refused = await upload(c, headers, b"new", "new")
                assert refused.status_code == 503
            except httpx.ConnectError:
                pass  # the listener is already closed: refused as well
        writer.write(body[1_000_000:])
        await writer.drain()
        assert await read_status(reader) == 201
        writer.close()
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await asyncio.to_thread(stop_process, proc)
