"""avatar/: upload (square, upright, metadata-free, WebP thumbnails), list, delete; refusals store
nothing; the imaging pool keeps the server answering while a large avatar is processed."""

from __future__ import annotations

import asyncio
import io
import os
import time

import httpx
import pytest
from PIL import Image

from imaging import AVATAR_SIZES
from tests.helpers import assert_error, sha256, upload
from tests.test_imaging import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    animated,
    bomb_png,
    encode,
    fetch_image,
    marked_centre,
    near,
    oriented_jpeg,
    quadrants,
    thumb_dirs,
)

URL = "/api/v1/avatar/"


async def avatar(client: httpx.AsyncClient, headers: dict, content: bytes, name: str, **fields) -> httpx.Response:
    files = {"file": (name, content, fields.pop("part_type", "application/octet-stream"))}
    data = {k: str(v) for k, v in fields.items()}
    return await client.post(URL + "upload/", headers=headers, files=files, data=data)


async def made(client, headers, content: bytes, name: str, **fields) -> tuple[dict, Image.Image]:
    """Upload an avatar; check the answer, the avatar and every thumbnail it lists."""
    r = await avatar(client, headers, content, name, **fields)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["is_avatar"] is True
    assert {"used", "quota", "id", "slot_id", "file", "sha256", "hash"} <= body.keys()
    im = await fetch_image(client, body["file"])
    assert im.size == (body["width"], body["height"])
    assert body["width"] == body["height"]
    side = body["width"]
    expected = [s for s in AVATAR_SIZES if s < side] if fields.get("create_thumbnails", "true") == "true" else []
    assert [t["width"] for t in body["thumbnails"]] == expected
    stem = body["name"].rsplit(".", 1)[0]
    for thumb, size in zip(body["thumbnails"], expected, strict=True):
        assert thumb["url"].endswith(f"/{body['slot_id']}/{size}_{stem}.webp")
        assert thumb["height"] == size
        small = await fetch_image(client, thumb["url"])
        assert small.format == "WEBP" and small.size == (size, size)
    return body, im


async def stored_nothing(service) -> None:
    store = service.parts.store
    assert await store.clean_staging(0) == 0  # no staging file was left behind
    assert await store.contents() == set()
    assert await thumb_dirs(service) == set()


async def test_jpeg_avatar_is_upright_square_and_stripped(client, alice, service):
    source = oriented_jpeg(1200, 800, 6, gps=True)
    original = Image.open(io.BytesIO(source))
    assert original.getexif().get_ifd(0x8825) and b"secret-place" in source  # the source has GPS and XMP
    body, im = await made(client, alice, source, "me.jpg")
    assert body["media_type"] == "image/jpeg" and body["name"] == "me.jpg" and im.format == "JPEG"
    assert body["width"] == 800  # min(w, h): not downscaled, not upscaled
    assert len(body["thumbnails"]) == len(AVATAR_SIZES)  # 768 < 800: every size
    # displayed upright (1200x800 stored, turned to 800x1200), then the centre 800x800 kept:
    # blue|red over yellow|green
    assert near(im.getpixel((100, 100)), BLUE) and near(im.getpixel((700, 100)), RED)
    assert near(im.getpixel((100, 700)), YELLOW) and near(im.getpixel((700, 700)), GREEN)
    # metadata gone: no EXIF (so no GPS and no orientation left to apply twice), no XMP
    data = (await client.get(body["file"])).content
    assert len(im.getexif()) == 0 and not im.getexif().get_ifd(0x8825)
    assert b"Exif" not in data and b"secret-place" not in data and b"xmpmeta" not in data
    assert "xmp" not in im.info and "exif" not in im.info
    assert body["size"] == len(data) and body["sha256"] == sha256(data) != sha256(source)
    quota = (await client.get("/api/v1/account/quota/", headers=alice)).json()
    assert quota["used"] == body["size"] == body["used"]


async def test_large_png_is_brought_down_to_1536(client, alice):
    body, im = await made(client, alice, marked_centre(3000, 2000), "selfie_avatar.png")
    assert body["media_type"] == "image/png" and im.format == "PNG" and im.size == (1536, 1536)
    assert body["thumbnails"][1]["url"].endswith("/48_selfie_avatar.webp")
    assert near(im.getpixel((768, 768)), RED)
    for point in ((0, 0), (1535, 0), (0, 1535), (1535, 1535), (0, 768), (1535, 768)):
        assert near(im.getpixel(point), BLUE), point  # centred: the green ends were cut away


async def test_small_avatar_is_never_upscaled(client, alice):
    body, im = await made(client, alice, encode(quadrants(100, 60), "WEBP", lossless=True), "tiny.webp")
    assert body["media_type"] == "image/webp" and im.format == "WEBP" and im.size == (60, 60)
    assert [t["width"] for t in body["thumbnails"]] == [32, 48]
    body, im = await made(client, alice, encode(Image.new("RGB", (20, 20), RED), "PNG"), "dot.png")
    assert im.size == (20, 20) and body["thumbnails"] == []


@pytest.mark.parametrize(("width", "height"), [(900, 500), (500, 900)])
async def test_avatar_crop_is_centred(client, alice, width, height):
    _, im = await made(client, alice, marked_centre(width, height, "JPEG"), "c.jpg")
    assert im.size == (500, 500)
    assert near(im.getpixel((250, 250)), RED)
    for point in ((2, 2), (497, 2), (2, 497), (497, 497), (2, 250), (497, 250), (250, 2), (250, 497)):
        assert near(im.getpixel(point), BLUE), point


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
async def test_animated_avatar_keeps_its_first_frame(client, alice, fmt):
    _, im = await made(client, alice, animated(fmt), f"anim.{fmt.lower()}")
    assert im.format == fmt and im.size == (120, 120)
    assert getattr(im, "n_frames", 1) == 1
    assert near(im.convert("RGB").getpixel((60, 60)), RED, 10)


async def test_other_formats_become_png(client, alice):
    body, im = await made(client, alice, encode(quadrants(300, 200), "BMP"), "scan.bmp")
    assert body["media_type"] == "image/png" and body["name"] == "scan.png" and im.format == "PNG"


async def test_create_thumbnails_false(client, alice):
    body, _ = await made(client, alice, marked_centre(400, 400), "plain.png", create_thumbnails="false")
    assert body["thumbnails"] == []


async def test_refusals_store_nothing(client, alice, service):
    assert_error(await avatar(client, alice, b"just some text\n" * 20, "me.jpg", part_type="image/jpeg"), 415)
    assert_error(await avatar(client, alice, os.urandom(5000), "me.png", media_type="image/png"), 415)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    assert_error(await avatar(client, alice, svg, "me.svg"), 415)
    # sniffs as an image, but cannot be decoded
    assert_error(await avatar(client, alice, oriented_jpeg(800, 600, 1)[:2500], "cut.jpg"), 415)
    assert_error(await avatar(client, alice, bomb_png(300, 300)[:33] + os.urandom(2000), "noise.png"), 415)
    # more pixels than the decode limit: a bomb, and a small file with many real pixels
    assert_error(await avatar(client, alice, bomb_png(), "bomb.png"), 413)
    service.settings.imaging.max_pixels = 1_000_000
    assert_error(await avatar(client, alice, encode(Image.new("L", (2000, 1000)), "PNG"), "wide.png"), 413)
    await stored_nothing(service)
    listed = (await client.get(URL, headers=alice)).json()
    assert listed["total_objects"] == 0
    quota = (await client.get("/api/v1/account/quota/", headers=alice)).json()
    assert quota["used"] == 0
    assert_error(await client.post(URL + "upload/", files={"file": ("a.png", b"x")}), 401)


async def test_list_and_delete_see_avatars_only(client, alice, bob, service):
    a1, _ = await made(client, alice, marked_centre(300, 200), "one.png")
    a2, _ = await made(client, alice, marked_centre(200, 300, "JPEG"), "two.jpg")
    plain = (await upload(client, alice, marked_centre(300, 300), "file.png")).json()
    assert "is_avatar" not in plain and plain["thumbnails"] == []  # every upload answer has the list
    listed = (await client.get(URL, headers=alice, params={"obj_per_page": 1})).json()
    assert (listed["total_objects"], listed["total_pages"], listed["page"]) == (2, 2, 1)
    assert listed["items"][0]["id"] == a2["id"]  # newest first
    item = listed["items"][0]
    assert item["is_avatar"] is True and item["thumbnails"] == a2["thumbnails"]
    files = (await client.get("/api/v1/files/", headers=alice)).json()
    assert [f["id"] for f in files["items"]] == [plain["id"]]
    assert (await client.get(URL, headers=bob)).json()["total_objects"] == 0
    # DELETE avatar/ never touches other files, nor another user's avatars
    assert_error(await client.request("DELETE", URL, headers=alice, params={"id": plain["id"]}), 404)
    assert_error(await client.request("DELETE", URL, headers=bob, params={"id": a1["id"]}), 404)
    assert_error(await client.request("DELETE", URL, headers=alice, params={"id": "nonsense"}), 404)
    assert_error(await client.request("DELETE", URL, headers=alice), 400)
    assert_error(await client.request("DELETE", "/api/v1/files/", headers=alice, params={"id": a1["id"]}), 404)
    r = await client.request("DELETE", URL, headers=alice, params={"id": a1["id"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deleted"] == 1 and body["used"] == a2["size"] + plain["size"] and "quota" in body
    assert (await client.get(a1["file"])).status_code == 404
    for thumb in a1["thumbnails"]:
        assert (await client.get(thumb["url"])).status_code == 404
    r = await client.request("DELETE", URL, headers=alice, json={"id": a2["id"]})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert (await client.get(plain["file"])).status_code == 200
    assert len(await thumb_dirs(service)) == 1  # only the plain file's thumbnail is left


async def test_same_avatar_twice_shares_its_thumbnails(client, alice, bob, service):
    source = oriented_jpeg(700, 500, 6)
    a, _ = await made(client, alice, source, "a.jpg")
    b, _ = await made(client, bob, source, "b.jpg")
    assert a["sha256"] == b["sha256"] and a["slot_id"] != b["slot_id"]
    assert len(await thumb_dirs(service)) == 1
    assert b["thumbnails"][0]["url"].endswith("/32_b.webp")
    await client.request("DELETE", URL, headers=alice, params={"id": a["id"]})
    assert (await client.get(b["thumbnails"][-1]["url"])).status_code == 200
    await client.request("DELETE", URL, headers=bob, params={"id": b["id"]})
    assert await thumb_dirs(service) == set()


async def test_stats_count_avatars_apart(client, alice):
    a, _ = await made(client, alice, marked_centre(300, 200), "one.png")
    stats = (await client.get("/api/v1/files/stats/", headers=alice)).json()
    assert stats["avatars"] == {"count": 1, "used": a["size"]}
    assert stats["images"]["count"] == 0


@pytest.mark.slow
async def test_server_answers_while_a_40_megapixel_avatar_is_processed(client, alice):
    width, height = 8000, 5000  # 40 MP
    big = await asyncio.to_thread(marked_centre, width, height, "PNG")
    sent = asyncio.Event()

    async def body():
        view = memoryview(upload_body)
        for start in range(0, len(view), 1 << 20):
            yield bytes(view[start : start + (1 << 20)])
        sent.set()

    boundary = "avatar-boundary"
    upload_body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.png"\r\n\r\n'.encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**alice, "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(upload_body))}

    async def post() -> tuple[httpx.Response, float]:
        r = await client.post(URL + "upload/", headers=headers, content=body())
        return r, time.monotonic()

    task = asyncio.ensure_future(post())
    await sent.wait()
    listed_at = []
    while not task.done():
        started = time.monotonic()
        r = await client.get(URL, headers=alice)
        assert r.status_code == 200
        listed_at.append((started, time.monotonic()))
        await asyncio.sleep(0.05)
    r, finished = await task
    assert r.status_code == 201, r.text
    assert r.json()["width"] == 1536
    answered_before = [(s, e) for s, e in listed_at if e < finished]
    assert answered_before, "no list request answered while the avatar was processed"
    assert max(e - s for s, e in answered_before) < 0.5  # and none waited for it
