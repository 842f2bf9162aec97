"""POST avatar/upload/ with a 24 MP JPEG and a 4000×3000 PNG (each cropped, scaled and made into
10 WebP sizes before the answer), after a warm-up that starts the imaging pool."""

from __future__ import annotations

import asyncio
import functools
import io
import time
from pathlib import Path

from bench.client import CommandCount, expect, post_upload
from bench.common import MB, progress
from bench.fixtures import close_parts
from bench.httpclient import FilePart, Response
from bench.profiler import profiled
from bench.rows import Figures, Row, commands
from bench.session import Session, User
from bench.stats import with_summary

NAME = "avatars"
ROUTE = "/api/v1/avatar/upload/"
IMAGES = (
    ("avatar_jpeg_24mp", "avatar: 24 MP JPEG (6000×4000)"),
    ("avatar_png_4000x3000", "avatar: 4000×3000 PNG"),
)


@functools.cache
def small_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((64, 64)).save(out, "PNG")
    return out.getvalue()


def make_images(directory: Path) -> dict[str, Path]:
    """A photo-like 24-megapixel JPEG (6000x4000) and a 4000x3000 PNG (gradients and noise)."""
    from PIL import Image, ImageFilter

    width, height = 6000, 4000
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.effect_noise((width, height), 64).filter(ImageFilter.GaussianBlur(1.5))
    picture = Image.merge("RGB", (red, green, blue))
    jpeg = directory / "avatar-24mp.jpg"
    picture.save(jpeg, quality=90)
    png = directory / "avatar-4000x3000.png"
    picture.resize((4000, 3000)).save(png, compress_level=3)
    return {"jpeg_24mp": jpeg, "png_4000x3000": png}


async def post_avatar(session: Session, user: User, parts: list[bytes | FilePart], size: int, name: str, kind: str) -> Response:
    conn = session.connection()
    try:
        return await post_upload(conn, user, parts, size, name, ROUTE, kind)
    finally:
        conn.close()


async def one_avatar(session: Session, user: User, key: str, path: Path, first: bool) -> tuple[Response, dict]:
    size = path.stat().st_size
    parts: list[bytes | FilePart] = [FilePart(open(path, "rb"), 0, size)]  # noqa: SIM115
    kind = "image/jpeg" if path.suffix == ".jpg" else "image/png"
    rss, cpu = session.meters()
    try:
        async with CommandCount(session) as count:
            with profiled(session, f"avatar_{key}", first), rss, cpu:
                started = time.perf_counter()
                response = await post_avatar(session, user, parts, size, path.name, kind)
                seconds = time.perf_counter() - started
    finally:
        close_parts(parts)
    sample = {"ms": seconds * 1000, "server_cpu_s": cpu.used["server"], "rss_peak_mib": rss.peak_mib, **count.figures(1)}
    return response, sample


async def measure(session: Session) -> dict:
    user = await session.new_user("avatar")
    images = await asyncio.to_thread(make_images, session.tmp)
    # warm-up: the imaging pool starts its worker processes on its first job; a user meets that
    # once per service start, so the figures below are for a started pool
    warm = await post_avatar(session, user, [small_png()], len(small_png()), "warm.png", "image/png")
    found: dict = {"avatar_warm_up_ms": warm.seconds * 1000}
    for key, path in images.items():
        size, samples = path.stat().st_size, []
        for round_number in range(session.plan.avatar_repeats):
            response, sample = await one_avatar(session, user, key, path, round_number == 0)
            if response.status in (404, 405):
                progress(f"avatar upload: {ROUTE} answered {response.status}: not available")
                return found | {f"avatar_{key}": {"available": False, "status": response.status}}
            sample["thumbnails"] = len(expect(response, 201, f"avatar {key}").get("thumbnails") or [])
            samples.append(sample)
            progress(f"avatar {key} ({size / MB:.1f} MB): {sample['ms']:.0f} ms, {sample['thumbnails']} thumbnails")
        found[f"avatar_{key}"] = with_summary(samples, available=True, bytes=size)
    return found


def rows(figures: Figures) -> list[Row]:
    found = []
    for key, label in IMAGES:
        if (item := figures.get(key)) is None:
            continue
        if not item.get("available"):
            note = f"not available: POST avatar/upload/ answered {item.get('status', '?')}"
            found.append(Row(label, None, "ms", note=note))
            continue
        note = f"{item['bytes'] / MB:.1f} MB, {item['median_thumbnails']:.0f} WebP sizes"
        found.append(Row(label, item["median_ms"], "ms", commands=commands(item), note=note))
    return found


def memory_rows(figures: Figures) -> list[Row]:
    return []
