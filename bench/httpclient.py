"""A minimal HTTP/1.1 client over raw non-blocking sockets on the asyncio loop.

Built so that the client is never what a measurement measures:
- request bodies go out with `loop.sock_sendfile` (os.sendfile from a pre-generated file: no
  copies through Python) plus a few small `sock_sendall` writes for the multipart framing;
- response bodies that are not needed are read with `sock_recv_into` into one reusable buffer
  and only counted;
- one keep-alive connection per concurrent worker, no pooling logic, no header objects.
It understands what gallery answers: Content-Length bodies (and close-delimited ones).
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

RECV_BUFFER = 1 << 20
BOUNDARY = "gallery-bench-3f7a9c1e"


@dataclass
class FilePart:
    """`count` bytes of an open file from `offset`, sent with sendfile."""

    file: io.BufferedReader
    offset: int
    count: int


Body = Sequence[bytes | FilePart]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    length: int = 0  # bytes of body received (also when the body was discarded)
    seconds: float = 0.0


class HTTPError(RuntimeError):
    pass


@dataclass
class Connection:
    host: str
    port: int
    sock: socket.socket | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _scratch: bytearray = field(default_factory=lambda: bytearray(RECV_BUFFER))

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (self.host, self.port))
        self.sock = sock
        self._buffer.clear()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: Body = (),
        keep_body: bool = True,
    ) -> Response:
        """Send one request and read its response; reconnects when the server closed the
        connection (after an error answer, or an idle timeout)."""
        if self.sock is None:
            await self.open()
        loop = asyncio.get_running_loop()
        length = sum(len(part) if isinstance(part, bytes) else part.count for part in body)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        started = time.perf_counter()
        assert self.sock is not None
        first = head + body[0] if body and isinstance(body[0], bytes) else head
        await loop.sock_sendall(self.sock, first)
        for part in body[1:] if first is not head else body:
            if isinstance(part, bytes):
                await loop.sock_sendall(self.sock, part)
            else:
                await loop.sock_sendfile(self.sock, part.file, part.offset, part.count, fallback=False)
        response = await self._read_response(method, keep_body)
        response.seconds = time.perf_counter() - started
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    async def _recv_more(self) -> bool:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        count = await loop.sock_recv_into(self.sock, self._scratch)
        if count == 0:
            return False
        self._buffer += memoryview(self._scratch)[:count]
        return True

    async def _read_response(self, method: str, keep_body: bool) -> Response:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if not await self._recv_more():
                self.close()
                raise HTTPError("connection closed before the response headers")
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = Response(status, headers)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return response
        if "transfer-encoding" in headers:
            raise HTTPError(f"unexpected Transfer-Encoding: {headers['transfer-encoding']}")
        if "content-length" in headers:
            await self._read_body(response, int(headers["content-length"]), keep_body)
        else:
            await self._read_body(response, -1, keep_body)
            self.close()
        return response

    async def _read_body(self, response: Response, length: int, keep_body: bool) -> None:
        """Read `length` bytes (-1: up to EOF); keep them, or only count them."""
        loop = asyncio.get_running_loop()
        kept = bytearray()
        have = len(self._buffer) if length < 0 else min(len(self._buffer), length)
        if keep_body:
            kept += self._buffer[:have]
        del self._buffer[:have]
        received = have
        view = memoryview(self._scratch)
        while length < 0 or received < length:
            assert self.sock is not None
            want = len(view) if length < 0 else min(len(view), length - received)
            count = await loop.sock_recv_into(self.sock, view[:want])
            if count == 0:
                if length < 0:
                    break
                self.close()
                raise HTTPError(f"connection closed after {received} of {length} body bytes")
            received += count
            if keep_body:
                kept += view[:count]
        response.length = received
        response.body = bytes(kept)


def multipart(
    content: Sequence[bytes | FilePart],
    size: int,
    name: str = "bench.bin",
    fields: dict[str, str] | None = None,
    part_type: str = "application/octet-stream",
) -> tuple[dict[str, str], list[bytes | FilePart]]:
    """A multipart/form-data body: small fields, then the file part whose pieces are `content`."""
    head = b""
    for key, value in (fields or {}).items():
        head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {part_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    assert sum(len(p) if isinstance(p, bytes) else p.count for p in content) == size
    parts: list[bytes | FilePart] = [head, *content, tail]
    # merge leading small byte strings into one send
    while len(parts) > 1 and isinstance(parts[0], bytes) and isinstance(parts[1], bytes) and len(parts[1]) < 65536:
        parts[0:2] = [parts[0] + parts[1]]
    return {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, parts


def open_file(path: Path) -> io.BufferedReader:
    return open(path, "rb")


def get_discarding(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> Response:
    """GET on a blocking socket (run it in a thread), the body read with recv_into into one reused
    1 MiB buffer and only counted: the same receiving side as the loopback limit's sink, so a
    download is compared with that limit like for like."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    started = time.perf_counter()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        head = bytearray()
        while (end := head.find(b"\r\n\r\n")) < 0:
            count = sock.recv_into(view)
            if count == 0:
                raise HTTPError("connection closed before the response headers")
            head += view[:count]
        status_line, *header_lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        response = Response(int(status_line.split(" ", 2)[1]), {})
        for line in header_lines:
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
        received = len(head) - end - 4
        while count := sock.recv_into(view):
            received += count
    response.length = received
    response.seconds = time.perf_counter() - started
    return response
