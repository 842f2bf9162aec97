"""The ingest (storage/ingest.py) alone, into a real local store: an upload's bytes are copied
into two fixed buffers of BATCH_BYTES and each full one is hashed and written (with direct I/O on
a volume that has it); whatever the pieces' sizes and where they cross a buffer's end, the stored
file and the digests are the bytes fed, and nothing is left behind when the upload is given up."""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
from pathlib import Path

import pytest

from storage.ingest import BATCH_BYTES, Incoming, Overflow
from storage.local import ALIGN, FileSink, LocalStore, aligned
from tests.helpers import opaque

B = BATCH_BYTES


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    backend = LocalStore(tmp_path / "store")
    backend.prepare()
    return backend


def pieces_of(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces of `sizes` in turn (the last size repeats)."""
    out, at, i = [], 0, 0
    while at < len(data):
        size = sizes[min(i, len(sizes) - 1)]
        out.append(data[at : at + size])
        at += size
        i += 1
    return out


async def ingest(store: LocalStore, pieces: list[bytes]) -> Incoming:
    """Feed the pieces as a handler does (feed, then pump, per piece) and finish."""
    incoming = Incoming(store, limit=1 << 40)
    for piece in pieces:
        incoming.feed(piece)
        await incoming.pump()
    digests = await incoming.finish()
    data = b"".join(pieces)
    assert (digests.md5, digests.sha1, digests.sha256) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )
    assert incoming.size == len(data)
    assert bytes(incoming.head) == data[: 1 << 16]
    assert incoming.sink is not None and incoming.sink.path is not None
    assert incoming.sink.path.read_bytes() == data
    return incoming


@pytest.mark.parametrize(
    ("size", "sizes"),
    [
        (0, [1]),
        (1, [1]),
        (B - 1, [256 * 1024]),
        (B, [256 * 1024]),  # exactly one full buffer: the last batch is empty
        (B + 1, [256 * 1024]),
        (2 * B + ALIGN + 7, [300_001]),  # pieces that cross every buffer's end
        (3 * B + 5, [3 * B + 5]),  # one piece larger than both buffers
        (B + 10, [B - 3, 2, 1, 4, 10]),  # a buffer filled exactly by a piece, then small pieces
        (2 * B, [B, B]),
        (100_000, [7]),  # many tiny pieces
    ],
)
async def test_any_cut_of_the_bytes_is_stored_and_hashed_whole(store, size, sizes):
    await ingest(store, pieces_of(opaque(size), sizes))


async def test_full_batches_go_with_direct_io_and_the_tail_buffered(store):
    incoming = await ingest(store, pieces_of(opaque(2 * B + 1234), [256 * 1024]))
    sink = incoming.sink
    assert isinstance(sink, FileSink)
    # /tmp's filesystem (ext4, tmpfs) has direct I/O; the short last batch turned it off
    assert sink._direct is False
    assert sink.written == 2 * B + 1234


async def test_a_store_without_aligned_pieces_writes_buffered(store, tmp_path):
    sink = store.open_sink()
    data = opaque(3 * ALIGN)
    assert sink.write([data[:ALIGN], data[ALIGN:]]) == len(data)  # bytes: never direct
    assert sink._direct is False
    sink.finish()
    assert sink.path.read_bytes() == data


async def test_an_aligned_buffer_after_an_unaligned_write_is_written_buffered(store):
    """Regression: a first write of bytes left direct I/O untried, so a later aligned buffer
    switched it on at an unaligned file offset and the write failed (EINVAL: a 507)."""
    sink = store.open_sink()
    block = mmap.mmap(-1, 4 * ALIGN)
    block.write(opaque(4 * ALIGN))
    assert sink.write([b"abc"]) == 3
    assert sink.write([memoryview(block)]) == 4 * ALIGN
    sink.finish()
    assert sink.path.read_bytes() == b"abc" + block[:]


def test_aligned_is_a_page_aligned_writable_view_of_whole_blocks():
    buffer = memoryview(mmap.mmap(-1, 4 * ALIGN))
    assert aligned(buffer)
    assert aligned(buffer[ALIGN : 3 * ALIGN])
    assert not aligned(buffer[1 : ALIGN + 1])  # address off the alignment
    assert not aligned(buffer[: ALIGN + 1])  # length off the alignment
    assert not aligned(bytes(4 * ALIGN))  # bytes are read-only: never handed to direct I/O
    assert not aligned(memoryview(bytes(4 * ALIGN)))
    assert not aligned(buffer[::2])  # not contiguous
    buffer.release()


async def test_overflow_is_raised_by_the_piece_past_the_limit(store):
    incoming = Incoming(store, limit=B + 1)
    incoming.feed(opaque(B))
    await incoming.pump()
    with pytest.raises(Overflow):
        incoming.feed(b"xy")
    await incoming.discard()
    assert os.listdir(store.tmp) == []


async def test_discard_while_a_batch_is_being_written_leaves_nothing(store):
    incoming = Incoming(store, limit=1 << 40)
    incoming.feed(opaque(B))
    await incoming.pump()  # the first batch is now in the workers' hands
    incoming.feed(opaque(B))
    pumping = asyncio.ensure_future(incoming.pump())  # waits for the first batch
    await asyncio.sleep(0)
    await incoming.discard()  # the client went: waits for the batch in flight, then drops it
    await pumping  # and the waiting pump hands nothing more over
    incoming.feed(b"more")  # a piece still parsed after that is dropped
    await incoming.pump()
    assert os.listdir(store.tmp) == []
    with pytest.raises(Exception, match="given up"):
        await incoming.finish()


async def test_a_small_upload_maps_one_buffer_and_a_large_one_two(store):
    small = Incoming(store, limit=1 << 40)
    small.feed(opaque(4096))
    await small.pump()
    assert len(small._buffers) == 1
    await small.finish()
    assert small._buffers == []  # unmapped once the upload is over
    large = Incoming(store, limit=1 << 40)
    large.feed(opaque(B + 1))
    await large.pump()
    assert len(large._buffers) == 2
    await large.discard()
    assert large._buffers == []
