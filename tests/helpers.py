"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx


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
