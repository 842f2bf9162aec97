"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import httpx

# Small samples libmagic recognises: a 1x1 GIF, a WebM header, a WAV (a "voice" message).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
WEBM = bytes.fromhex("1a45dfa3") + b"\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm"


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(os.urandom(400))
    return out.getvalue()


def opaque(size: int) -> bytes:
    """Unique content libmagic finds nothing in: a fixed unrecognised start (random bytes alone
    sometimes begin like an executable or an image), then random bytes."""
    prefix = b"\x9a\x13\xc7\x02" * 4
    return (prefix + os.urandom(max(0, size - len(prefix))))[:size]


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The contract's error body, with the real status repeated as a string."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == str(status)
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    return body


async def upload(client: httpx.AsyncClient, headers: dict, content: bytes, name: str = "a.bin", **fields: Any) -> httpx.Response:
    files = {"file": (name, content, fields.pop("part_type", "application/octet-stream"))}
    data = {k: str(v) for k, v in fields.items()}
    return await client.post("/api/v1/files/upload/", headers=headers, files=files, data=data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart(
    parts: list[tuple[str, str | None, bytes]], boundary: str = "gallery-test-boundary"
) -> tuple[dict[str, str], bytes]:
    """A multipart/form-data body built byte by byte (no client-side escaping of names)."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, out


ROOT = Path(__file__).resolve().parent.parent


def server_env(settings: Any) -> dict[str, str]:
    """The environment that makes `python server.py` use a test's database and storage."""
    return {
        **os.environ,
        "GALLERY_SERVER_PORT": "0",
        "GALLERY_MONGODB_URI": settings.mongodb.uri,
        "GALLERY_MONGODB_DATABASE": settings.mongodb.database,
        "GALLERY_STORAGE_PATH": str(settings.storage_path),
        "GALLERY_LIMITS_UPLOADS_PER_WINDOW": "10000",
        "GALLERY_LIMITS_CONCURRENT_UPLOADS_PER_USER": "100",
    }


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`python server.py` as a user runs it; returns the process and the URL it serves on."""
    out = open(log, "w")  # noqa: SIM115 - the child writes to it until it exits
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py")], env=env, stdout=out, stderr=subprocess.STDOUT)
    marker = "gallery serving on "
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        if marker in text:
            return proc, text.rsplit(marker, 1)[1].split()[0]
        if proc.poll() is not None:
            raise RuntimeError(text)
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(log.read_text())


async def stored(service: Any, sha: str) -> bool:
    """The store holds that content (asked through the store's face, whatever the backend)."""
    return await service.parts.store.size(sha) is not None


async def user_doc(service: Any, jid: str) -> dict | None:
    return await service.parts.db.users.find_one({"_id": jid})
