"""Content for uploads, made on request: random files for sendfile bodies, upload bodies that
are new content every time, and the client's own digests of a body."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.common import MB, BenchError
from bench.httpclient import FilePart


def write_random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as target:
        for offset in range(0, size, 8 * MB):
            target.write(os.urandom(min(8 * MB, size - offset)))
    return path


def unique_content(path: Path, size: int) -> list[bytes | FilePart]:
    """`size` bytes: 16 fresh random bytes, then the file's bytes from offset 16 (sendfile), so
    that each upload is new content (no dedup), at no cost to the client."""
    return [os.urandom(16), FilePart(open(path, "rb"), 16, size - 16)]


def close_parts(parts: list[bytes | FilePart]) -> None:
    for part in parts:
        if isinstance(part, FilePart):
            part.file.close()


def digests_of(parts: list[bytes | FilePart]) -> tuple[str, str]:
    """(md5, sha256) of an upload body, as the client computes them."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            data = part
        else:
            part.file.seek(part.offset)
            data = part.file.read(part.count)
            part.file.seek(0)
        md5.update(data)
        sha256.update(data)
    return md5.hexdigest(), sha256.hexdigest()


def check_stored(body: dict, size: int, parts: list[bytes | FilePart], verify: bool) -> dict:
    """The service's answer to an upload of `parts`, checked: all `size` bytes, and (with
    `verify`) the digests the client computes."""
    if body["size"] != size:
        raise BenchError(f"the service stored {body['size']} bytes of {size}")
    if verify and (body["hash"], body["sha256"]) != digests_of(parts):
        raise BenchError("the service's md5/sha256 differ from the client's")
    return body
