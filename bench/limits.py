"""This machine's limits, measured in the same run as the service's figures (MB = 10^6 bytes).

- md5 and sha256 over in-memory data in 1 MiB updates, on one core (what an upload must do);
- sequential write with one fsync at the end, into the storage directory the service uses;
- small durable writes: 4 KiB + fsync + rename + directory fsync per second (what each small
  upload must do at least);
- loopback TCP copy: an asyncio client pushes to a sink in another process that reads with
  recv_into into one buffer (how the benchmark's clients and the server move bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import socket
import time
from pathlib import Path

MB = 1_000_000
MIB = 1 << 20
CHUNK = MIB


def hash_mb_s(name: str, total: int) -> float:
    data = memoryview(os.urandom(min(total, 64 * MIB)))
    digest = hashlib.new(name)
    start = time.perf_counter()
    done = 0
    while done < total:
        for offset in range(0, len(data), CHUNK):
            digest.update(data[offset : offset + CHUNK])
        done += len(data)
    return done / MB / (time.perf_counter() - start)


def disk_write_mb_s(directory: Path, total: int) -> float:
    block = os.urandom(8 * MB)
    path = directory / "bench-disk-test.bin"
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(total // len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    path.unlink()
    return total // len(block) * len(block) / MB / elapsed


def durable_small_writes_per_s(directory: Path, seconds: float) -> float:
    """Create a 4 KiB file, fsync it, rename it into a directory, fsync that directory."""
    work = directory / "bench-fsync-test"
    (work / "in").mkdir(parents=True, exist_ok=True)
    payload = os.urandom(4096)
    done = 0
    start = time.perf_counter()
    dir_fd = os.open(work / "in", os.O_RDONLY | os.O_DIRECTORY)
    try:
        while time.perf_counter() - start < seconds:
            temp = work / f"t{done}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
            os.rename(temp, work / "in" / f"f{done}")
            os.fsync(dir_fd)
            done += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(dir_fd)
        for entry in (work / "in").iterdir():
            entry.unlink()
        (work / "in").rmdir()
        work.rmdir()
    return done / elapsed


def _tcp_sink(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        buffer, received = bytearray(CHUNK), 0
        while count := connection.recv_into(buffer):
            received += count
        connection.sendall(str(received).encode())


async def _tcp_push(port: int, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = memoryview(os.urandom(CHUNK))
    start = time.perf_counter()
    for _ in range(total // CHUNK):
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    received = int(await reader.read())
    elapsed = time.perf_counter() - start
    writer.close()
    if received != total // CHUNK * CHUNK:
        raise RuntimeError(f"sink received {received} bytes, expected {total}")
    return elapsed


def loopback_tcp_mb_s(total: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sink = multiprocessing.get_context("fork").Process(target=_tcp_sink, args=(listener,))
    sink.start()
    listener.close()
    try:
        elapsed = asyncio.run(_tcp_push(port, total))
    finally:
        sink.join(10)
        if sink.is_alive():
            sink.terminate()
            sink.join()
    return total // CHUNK * CHUNK / MB / elapsed
