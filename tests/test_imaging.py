"""Thumbnails for uploads, made in the imaging pool, and the pool's own safety (timeouts, crashes).

Every image here is generated in the test (with Pillow, PyAV, or byte by byte for headers that
Pillow would refuse to write). Every hostile case must end in a 201 with correct output or with
`thumbnail: null`: never a 500, never a hung worker.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image, ImageDraw

from imaging.pool import JobFailed, PoolImaging
from settings import ImagingSettings
from tests.helpers import staging, upload

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 220, 20)
FORMAT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


# -- generated images ------------------------------------------------------------------------
def encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def quadrants(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    im = Image.new(mode, (width, height))
    draw = ImageDraw.Draw(im)
    w2, h2 = width // 2, height // 2
    for box, colour in (
        ((0, 0, w2, h2), RED),
        ((w2, 0, width, h2), GREEN),
        ((0, h2, w2, height), BLUE),
        ((w2, h2, width, height), YELLOW),
    ):
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    return im


def oriented_jpeg(width: int = 400, height: int = 300, orientation: int = 6, gps: bool = False) -> bytes:
    """Stored landscape quadrants with an EXIF orientation tag (6: turn 90° clockwise to show),
    optionally with GPS tags and an XMP packet."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options: dict = {"quality": 92}
    if gps:
        ifd = exif.get_ifd(0x8825)
        ifd.update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)})
        options["xmp"] = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-place</x:xmpmeta>'
    return encode(quadrants(width, height), "JPEG", exif=exif, **options)


def marked_centre(width: int, height: int, fmt: str = "PNG") -> bytes:
    """Blue, with green bands at the far ends (cut by a centred crop) and a red centre square."""
    im = Image.new("RGB", (width, height), BLUE)
    draw = ImageDraw.Draw(im)
    band = (max(width, height) - min(width, height)) // 4
    if band == 0:
        pass  # square: nothing to cut away
    elif width > height:
        draw.rectangle((0, 0, band - 1, height - 1), fill=GREEN)
        draw.rectangle((width - band, 0, width - 1, height - 1), fill=GREEN)
    else:
        draw.rectangle((0, 0, width - 1, band - 1), fill=GREEN)
        draw.rectangle((0, height - band, width - 1, height - 1), fill=GREEN)
    side = min(width, height) // 5
    cx, cy = width // 2, height // 2
    draw.rectangle((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2), fill=RED)
    return encode(im, fmt)


def rgba_png() -> bytes:
    im = Image.new("RGBA", (300, 300), (*RED, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 149, 299), fill=(0, 0, 0, 0))  # left half transparent
    return encode(im, "PNG")


def palette_png() -> bytes:
    im = Image.new("P", (300, 300), 1)
    im.putpalette([0, 0, 0, *RED, *GREEN] + [0] * (256 * 3 - 9))
    ImageDraw.Draw(im).rectangle((0, 0, 149, 299), fill=0)
    return encode(im, "PNG", transparency=0)  # index 0 (left half) is transparent


def gray16_png(value: int = 30000) -> bytes:
    return encode(Image.new("I;16", (300, 300), value), "PNG")


def _png(width: int, height: int, depth: int, colour: int, rows: bytes | None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(rows or b"\0")) + chunk(b"IEND", b"")


def rgb48_png(width: int = 300, height: int = 300) -> bytes:
    """16 bits per channel RGB (Pillow reads it, but does not write it)."""
    row = b"\0" + struct.pack(">3H", 60000, 30000, 0) * width
    return _png(width, height, 16, 2, row * height)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A header claiming ten gigapixels, over a few bytes of data."""
    return _png(width, height, 8, 2, None)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG")  # red in print colours


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (200, 120), colour) for colour in (RED, GREEN, BLUE)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def video(fmt: str = "mp4", codec: str = "libx264", size: tuple[int, int] = (320, 240)) -> bytes:
    av = pytest.importorskip("av")
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for colour in (RED, RED, GREEN):
            frame = av.VideoFrame.from_image(Image.new("RGB", size, colour))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def near(pixel, colour, tolerance: int = 45) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# -- helpers ------------------------------------------------------------------------------------
async def fetch_image(client: httpx.AsyncClient, url: str) -> Image.Image:
    """Download a thumbnail: 200, and its Content-Type is what the bytes really are."""
    r = await client.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    im = Image.open(io.BytesIO(r.content))
    im.load()
    assert r.headers["content-type"].split(";")[0] == FORMAT_TYPES[im.format], (r.headers["content-type"], im.format)
    assert int(r.headers["content-length"]) == len(r.content)
    return im


async def thumbnail_of(client, headers, data: bytes, name: str, **fields) -> tuple[dict, Image.Image | None]:
    r = await upload(client, headers, data, name, **fields)
    assert r.status_code == 201, r.text
    body = r.json()
    if body["thumbnail"] is None:
        return body, None
    im = await fetch_image(client, body["thumbnail"]["url"])
    assert im.size == (body["thumbnail"]["width"], body["thumbnail"]["height"])
    return body, im


async def thumb_dirs(service) -> set[str]:
    """The contents that have derived images in the store."""
    return await service.parts.store.derived_contents()


# -- thumbnails -------------------------------------------------------------------------------------
async def test_jpeg_thumbnail_is_upright_square_jpeg(client, alice):
    body, im = await thumbnail_of(client, alice, oriented_jpeg(400, 300, 6), "photo.jpg")
    assert body["media_type"] == "image/jpeg"
    assert (body["width"], body["height"]) == (300, 400)  # as displayed: orientation 6 turns it upright
    assert body["thumbnail"]["url"].endswith("/thumb_photo.jpg")
    assert im.format == "JPEG" and im.size == (256, 256)
    # stored red|green over blue|yellow, turned 90° clockwise: blue|red over yellow|green
    assert near(im.getpixel((30, 30)), BLUE)
    assert near(im.getpixel((225, 30)), RED)
    assert near(im.getpixel((30, 225)), YELLOW)
    assert near(im.getpixel((225, 225)), GREEN)


@pytest.mark.parametrize(("width", "height"), [(600, 300), (300, 600)])
async def test_thumbnail_is_centre_cropped(client, alice, width, height):
    body, im = await thumbnail_of(client, alice, marked_centre(width, height), "centre.png")
    assert (body["width"], body["height"]) == (width, height)
    assert im.format == "PNG" and im.size == (256, 256)
    assert near(im.getpixel((128, 128)), RED)
    for corner in ((0, 0), (255, 0), (0, 255), (255, 255), (128, 0), (0, 128), (255, 128), (128, 255)):
        assert near(im.getpixel(corner), BLUE), corner  # the green bands at both ends were cut away


async def test_png_alpha_is_kept(client, alice):
    _, im = await thumbnail_of(client, alice, rgba_png(), "alpha.png")
    assert im.format == "PNG" and im.mode == "RGBA"
    assert im.getpixel((10, 128))[3] == 0
    assert im.getpixel((245, 128)) == (*RED, 255)


async def test_palette_png_with_transparency(client, alice):
    _, im = await thumbnail_of(client, alice, palette_png(), "palette.png")
    rgba = im.convert("RGBA")
    assert rgba.getpixel((10, 128))[3] == 0
    assert near(rgba.getpixel((245, 128)), RED) and rgba.getpixel((245, 128))[3] == 255


async def test_16_bit_pngs_are_scaled_not_clipped(client, alice):
    _, im = await thumbnail_of(client, alice, gray16_png(30000), "gray16.png")
    assert im.size == (256, 256)
    assert abs(im.convert("L").getpixel((128, 128)) - 30000 // 257) <= 2  # 116, not 255
    _, im = await thumbnail_of(client, alice, rgb48_png(), "rgb48.png")
    assert near(im.convert("RGB").getpixel((128, 128)), (233, 117, 0), 3)


async def test_cmyk_jpeg(client, alice):
    body, im = await thumbnail_of(client, alice, cmyk_jpeg(), "print.jpg")
    assert (body["width"], body["height"]) == (300, 200)
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (200, 200)
    assert near(im.getpixel((100, 100)), (255, 0, 0), 40)


@pytest.mark.parametrize(("fmt", "thumb_format"), [("GIF", "PNG"), ("WEBP", "WEBP")])
async def test_animations_give_their_first_frame(client, alice, fmt, thumb_format):
    body, im = await thumbnail_of(client, alice, animated(fmt), f"anim.{fmt.lower()}")
    assert body["media_type"] == FORMAT_TYPES[fmt]
    assert (body["width"], body["height"]) == (200, 120)
    assert im.format == thumb_format and im.size == (120, 120)  # never upscaled
    assert getattr(im, "n_frames", 1) == 1
    assert near(im.convert("RGB").getpixel((60, 60)), RED, 10)


async def test_one_pixel_wide_strip(client, alice):
    body, im = await thumbnail_of(client, alice, encode(Image.new("RGB", (1, 20000), GREEN), "PNG"), "strip.png")
    assert (body["width"], body["height"]) == (1, 20000)
    assert im.size == (1, 1) and near(im.convert("RGB").getpixel((0, 0)), GREEN, 5)


async def test_decompression_bomb_is_stored_without_thumbnail(client, alice, service):
    body, im = await thumbnail_of(client, alice, bomb_png(), "bomb.png")
    assert body["media_type"] == "image/png" and im is None and "width" not in body
    # a real image with more pixels than allowed (small file, many pixels)
    service.settings.imaging.max_pixels = 1_000_000
    body, im = await thumbnail_of(client, alice, encode(Image.new("L", (2000, 1000)), "PNG"), "wide.png")
    assert im is None and "width" not in body
    body, im = await thumbnail_of(client, alice, encode(Image.new("L", (1000, 1000)), "PNG"), "ok.png")
    assert im is not None and body["width"] == 1000  # at the limit: fine


async def test_broken_and_fake_images_are_stored_without_thumbnail(client, alice, service):
    truncated = oriented_jpeg(800, 600, 1)[:3000]
    body, im = await thumbnail_of(client, alice, truncated, "cut.jpg")
    assert body["media_type"] == "image/jpeg" and im is None
    assert (await client.get(body["file"])).content == truncated
    text = b"this is not a picture at all\n" * 50
    body, im = await thumbnail_of(client, alice, text, "fake.jpg")
    assert body["media_type"] == "text/plain" and im is None
    body, im = await thumbnail_of(client, alice, text, "fake.jpg", media_type="image/jpeg")
    assert body["media_type"] == "image/jpeg" and im is None  # declared, since sniffing found only text
    body, im = await thumbnail_of(client, alice, bomb_png(300, 300)[:33] + os.urandom(3000), "noise.png")  # header, then noise
    assert body["media_type"] == "image/png" and im is None
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    body, im = await thumbnail_of(client, alice, svg, "vector.svg")
    assert im is None
    assert staging(service.parts.store) == []


async def test_thumbnail_can_be_turned_off_and_made_later(client, alice):
    data = marked_centre(500, 400, "JPEG")
    body, im = await thumbnail_of(client, alice, data, "a.jpg", create_thumbnails="false")
    assert im is None and (body["width"], body["height"]) == (500, 400)
    body, im = await thumbnail_of(client, alice, data, "b.jpg")
    assert im is not None and im.size == (256, 256)


async def test_dedup_shares_one_thumbnail_and_it_goes_with_the_blob(client, alice, bob, service):
    data = marked_centre(640, 480, "WEBP")
    a, im_a = await thumbnail_of(client, alice, data, "a.webp")
    b, im_b = await thumbnail_of(client, bob, data, "b.webp")
    assert im_a.format == im_b.format == "WEBP"
    assert a["thumbnail"]["url"] != b["thumbnail"]["url"]
    assert len(await thumb_dirs(service)) == 1
    ra, rb = await client.get(a["thumbnail"]["url"]), await client.get(b["thumbnail"]["url"])
    assert ra.content == rb.content and ra.headers["etag"] == rb.headers["etag"]
    await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": a["id"]})
    assert (await client.get(b["thumbnail"]["url"])).status_code == 200
    assert (await client.get(a["thumbnail"]["url"])).status_code == 404
    await client.request("DELETE", "/api/v1/files/", headers=bob, params={"id": b["id"]})
    assert (await client.get(b["thumbnail"]["url"])).status_code == 404
    assert await thumb_dirs(service) == set()


async def test_thumbnail_download_headers(client, alice):
    body, _ = await thumbnail_of(client, alice, marked_centre(300, 300, "JPEG"), "h.jpg")
    r = await client.head(body["thumbnail"]["url"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in r.headers["cache-control"]
    assert r.headers["etag"] != (await client.head(body["file"])).headers["etag"]


@pytest.mark.parametrize(("fmt", "codec", "media_type"), [("mp4", "libx264", "video/mp4"), ("webm", "libvpx-vp9", "video/webm")])
async def test_video_first_frame(client, alice, fmt, codec, media_type):
    body, im = await thumbnail_of(client, alice, video(fmt, codec), f"clip.{fmt}")
    assert body["media_type"] == media_type
    assert (body["width"], body["height"]) == (320, 240)
    assert im is not None and im.format == "PNG" and im.size == (240, 240)
    assert near(im.convert("RGB").getpixel((120, 120)), RED, 30)


async def test_video_that_cannot_be_decoded(client, alice):
    data = video()
    body, im = await thumbnail_of(client, alice, data[: len(data) // 3], "cut.mp4")
    assert body["media_type"] == "video/mp4" and im is None


async def test_heic_when_pillow_heif_is_installed(client, alice):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    _, im = await thumbnail_of(client, alice, encode(quadrants(400, 300), "HEIF"), "phone.heic")
    assert im is not None and im.format == "PNG" and im.size == (256, 256)


async def test_many_hostile_uploads_at_once_never_fail(client, alice):
    """All at once: every answer is a 201, with a thumbnail exactly for the decodable ones."""
    cases = [
        bomb_png(),
        oriented_jpeg()[:2000],
        b"GIF89a" + os.urandom(500),
        cmyk_jpeg(),
        rgb48_png(),
        animated("GIF"),
        palette_png(),
    ]
    results = await asyncio.gather(*(upload(client, alice, data, f"h{i}.img") for i, data in enumerate(cases)))
    assert [r.status_code for r in results] == [201] * len(cases)
    assert sum(r.json()["thumbnail"] is not None for r in results) == 4


# -- the pool itself --------------------------------------------------------------------------------
async def test_pool_replaces_a_hung_worker_and_retries_innocent_jobs():
    pool = PoolImaging(ImagingSettings(workers=2, timeout=30))
    try:
        assert await pool.run(pow, 2, 10) == 1024
        started = time.monotonic()
        hung = asyncio.ensure_future(pool.run(time.sleep, 60, seconds=2))
        innocent = asyncio.ensure_future(pool.run(time.sleep, 3, seconds=20))  # killed with the pool, run again
        with pytest.raises(JobFailed):
            await hung
        assert time.monotonic() - started < 10
        assert await innocent is None
        assert pool.replaced == 1
        assert await pool.run(pow, 3, 3) == 27
    finally:
        await pool.close()


async def test_pool_survives_a_crashing_worker():
    pool = PoolImaging(ImagingSettings(workers=1, timeout=30))
    try:
        with pytest.raises(JobFailed):
            await pool.run(os._exit, 3)  # the worker dies (as on a segfault), twice
        assert pool.replaced == 2
        assert await pool.run(pow, 2, 5) == 32
    finally:
        await pool.close()
    with pytest.raises(JobFailed):
        await pool.run(pow, 2, 5)  # closed


async def test_server_survives_imaging_timeouts(client, alice, service):
    """A job that runs past the timeout gives no thumbnail, and the next upload has one again."""
    imaging = service.parts.imaging
    with pytest.raises(JobFailed):
        await imaging.run(time.sleep, 60, seconds=1)
    body, im = await thumbnail_of(client, alice, marked_centre(400, 300), "after.png")
    assert im is not None
    listed = (await client.get("/api/v1/files/", headers=alice)).json()
    assert listed["items"][0]["thumbnail"] == body["thumbnail"]
