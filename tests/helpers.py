"""Small helpers shared by the tests: sample content, requests, and the one way each of these is
done: a user with a token (`login`, `issue_token`), settings for a service (`override`; the
`make_service` fixture in conftest.py boots it), waiting for a condition (`wait_until`), starting
and stopping a process (`start_server`, `stop_process`), and looking at the store (`stored`,
`staging`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import io
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.context import Parts

if TYPE_CHECKING:
    from models.tokens import IssuedToken
    from server import Service
    from settings import Settings
    from storage import ContentStore

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
        "GALLERY_STORAGE_BACKEND": settings.storage.backend,
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
    stop_process(proc)
    raise TimeoutError(log.read_text())


def stop_process(process: subprocess.Popen | None, grace: float = 10) -> int | None:
    """Stop a child process (`python server.py`, Prosody, the embedded database): SIGTERM, up to
    `grace` seconds to exit, then SIGKILL. When the child leads its own process group (the
    embedded database starts a session of its own), the SIGKILL goes to the whole group. Blocks;
    returns the exit status (None: no process)."""
    if process is None:
        return None
    if process.poll() is None:
        leads_group = False
        with contextlib.suppress(ProcessLookupError):
            leads_group = os.getpgid(process.pid) == process.pid
            process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if leads_group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            process.wait(5)
    return process.returncode


async def wait_until(predicate: Callable[[], Any], within: float = 10, message: str = "the condition") -> None:
    """Poll `predicate` (a plain or an async function) every 50 ms until it returns something true;
    fail with `message` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {message}")
        await asyncio.sleep(0.05)


# -- users with tokens ----------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issue_token(parts: Parts, jid: str, device: str | None = None, client: str | None = None) -> IssuedToken:
    """A user (created if new, its login recorded) with a fresh token, as the XMPP login leaves
    them: the one place tests make users and tokens without a login over XMPP."""
    await parts.users.ensure(jid)
    return await parts.tokens.issue(jid, device, client)


async def login(target: Service | Parts, jid: str) -> dict[str, str]:
    """`issue_token` for a running service (or the `parts` of one that runs elsewhere); returns
    the auth headers."""
    parts = target if isinstance(target, Parts) else target.parts
    assert parts is not None, "the service is not started"
    return bearer((await issue_token(parts, jid)).token)


# -- settings for a service -------------------------------------------------------------------------


def override(settings: Settings, **overrides: Any) -> Settings:
    """Apply overrides to `settings` in place: a section takes a dict of its keys
    (`server={"body_timeout": 1}`), a top-level key its value (`admins=[...]`)."""
    for key, value in overrides.items():
        current = getattr(settings, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            for name, item in value.items():
                if not hasattr(current, name):
                    raise AttributeError(f"no setting {key}.{name}")
                setattr(current, name, item)
        else:
            setattr(settings, key, value)
    return settings


# -- the store --------------------------------------------------------------------------------------


async def stored(service: Any, sha: str) -> bool:
    """The store holds that content (asked through the store's face, whatever the backend)."""
    return await service.parts.store.size(sha) is not None


def staging(store: ContentStore) -> list[str]:
    """What the store's staging area holds now (uploads in flight, work in progress). The face
    has no call that lists it without removing it (`clean_staging` does), so this is the one
    place the tests look into the layout for it: the local scratch directory, and with GridFS the
    staging records of its sinks (uploads in flight are in the database)."""
    found = [entry.name for entry in store.tmp.iterdir()]  # type: ignore[attr-defined]
    meta = getattr(store, "meta", None)  # GridFSStore
    if meta is not None:
        found += [f"gridfs:{doc['_id']}" for doc in meta.staging.find({}, {"_id": 1})]
    return sorted(found)


async def user_doc(service: Any, jid: str) -> dict | None:
    return await service.parts.db.users.find_one({"_id": jid})
