"""Pure image functions over paths. They run in the imaging worker processes, never on the loop.

Safety, in the order it applies:
- only a closed list of decoders is tried (never EPS/Ghostscript, PDF or the exotic plugins);
- the pixel count in the header is checked against the limit before anything is decoded, and
  Pillow's own guard (`Image.MAX_IMAGE_PIXELS`) is set to the same limit with its warning raised
  as an error, so a decompression bomb is refused at `Image.open`;
- a JPEG is decoded in draft mode (DCT scaling by 1/2, 1/4 or 1/8) when the output is much
  smaller, which cuts decode time and memory by the square of the scale;
- only the first frame of an animation is decoded; a truncated file is refused, never padded;
- outputs are written under a temporary name, fsync'd and renamed, so a worker killed halfway
  leaves no partial file under a name that is served.
The pool (imaging/pool.py) adds the per-job timeout and a memory limit per worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageCms, ImageOps

from imaging import video

try:  # HEIC/HEIF (iPhone photos), when the optional pillow-heif package is installed
    from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    register_heif_opener = None

if register_heif_opener is not None:  # pragma: no cover - depends on the environment
    register_heif_opener()
Image.init()  # register every plugin now, so that the list below can name them
# The only decoders ever tried, whatever the content claims to be.
DECODERS = [f for f in ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF") if f in Image.OPEN]

THUMB_SIDE = 256
THUMB_FILE = "thumb"
VARIANT_FILE = "avatar_{size}.webp"

# Output formats: media type, extension, encoder options.
OUTPUTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "JPEG": ("image/jpeg", ".jpg", {"quality": 85}),
    "PNG": ("image/png", ".png", {"compress_level": 3}),  # zlib-ng: 3 is as small as 6 on photos, 2x faster
    "WEBP": ("image/webp", ".webp", {"quality": 82, "method": 4}),
    "GIF": ("image/gif", ".gif", {}),
}
# The format a decoded image is written back in: thumbnails keep JPEG, PNG and WebP; avatars
# also keep GIF (its first frame). Everything else becomes PNG.
THUMB_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
AVATAR_FORMATS = {**THUMB_FORMATS, "GIF": "GIF"}


class TooManyPixels(Exception):
    """More pixels than the limit allows."""


class Undecodable(Exception):
    """Not an image any allowed decoder can read in full."""


@contextlib.contextmanager
def _guarded(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb check at our limit, its warning raised as an error."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Read the header only: the format, the size, and whether it is within the pixel limit."""
    try:
        im = Image.open(path, formats=DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels from None
    except Exception:  # any decoder failure means "not an image we can read"
        raise Undecodable from None
    width, height = im.size
    if width < 1 or height < 1:
        im.close()
        raise Undecodable
    if width * height > max_pixels:
        im.close()
        raise TooManyPixels
    return im


def _family(mode: str) -> str:
    if mode == "CMYK":
        return "CMYK"
    if mode in ("1", "L", "LA", "La", "P", "PA", "F") or mode.startswith("I"):
        return "L" if mode not in ("P", "PA") else "RGB"
    return "RGB"


def _to_8bit(im: Image.Image) -> Image.Image:
    """The decoded image as L, LA, RGB or RGBA: 16-bit and float samples scaled (not clipped),
    palettes and transparency keys turned into alpha, CMYK converted (through its ICC profile
    when it has one)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("I", "F"):
        low, high = im.getextrema()  # type: ignore[misc]
        scale = 255 / (high - low) if high > low else 0
        return im.point(lambda v: (v - low) * scale).convert("L")
    if mode == "CMYK":
        icc = im.info.get("icc_profile")
        if icc:
            with contextlib.suppress(Exception):
                source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                converted = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
                if converted is not None:
                    return converted
        return im.convert("RGB")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    if mode in ("L", "RGB") and "transparency" in im.info:
        return im.convert("RGBA")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode == "1":
        return im.convert("L")
    return im.convert("RGBA" if "A" in mode or "a" in mode else "RGB")


def decode(im: Image.Image, target: int | None) -> tuple[Image.Image, tuple[int, int], bytes | None]:
    """Decode the first frame, upright. `target`: the largest square side the caller will make
    of it (JPEG is then decoded at the smallest DCT scale that still covers it). Returns the
    image, the full-size upright dimensions, and the ICC profile when it still applies."""
    stored = im.size
    if target and im.format in ("JPEG", "MPO"):
        im.draft(None, (target, target))
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels from None
    except Exception:  # truncated, corrupt, unsupported variant: all undecodable
        raise Undecodable from None
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block only loses the orientation
        orientation = 1
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(im, in_place=True)
    upright = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    icc = im.info.get("icc_profile")
    source_family = _family(im.mode)
    out = _to_8bit(im)
    if out is not im:
        out.info = {}
    if not icc or _family(out.mode) != source_family:
        icc = None
    return out, upright, icc


def _prepared(im: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode the encoder takes, with no metadata of the source attached."""
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        im = background
    elif fmt == "WEBP" and im.mode in ("L", "LA"):
        im = im.convert("RGBA" if im.mode == "LA" else "RGB")
    else:
        im = im.copy() if im.info else im
    im.info = {}  # EXIF, XMP, comments, text chunks: none of it is written
    return im


def write(im: Image.Image, path: Path, fmt: str, icc: bytes | None = None, **options: Any) -> None:
    """Encode to `path` atomically: a temp name beside it, fsync, rename."""
    params = {**OUTPUTS[fmt][2], **options}
    if icc and fmt != "GIF":
        params["icc_profile"] = icc
    im = _prepared(im, fmt)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as f:
            im.save(f, format=fmt, **params)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def square(im: Image.Image, side: int) -> Image.Image:
    """The centred square crop of `im`, scaled to `side` (callers never ask for more than the
    image's shorter side, so nothing is upscaled)."""
    return ImageOps.fit(im, (side, side), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def _thumbnails(
    pic: Image.Image,
    upright: tuple[int, int],
    fmt: str,
    icc: bytes | None,
    out_dir: Path,
    thumbnail: bool,
    variants: Sequence[int],
) -> dict:
    out: dict[str, Any] = {"thumbnail": None, "variants": None}
    shortest = min(upright)
    base = pic if pic.size[0] == pic.size[1] else square(pic, min(*pic.size, max([THUMB_SIDE, *variants]), shortest))
    out_dir.mkdir(parents=True, exist_ok=True)
    if thumbnail:
        side = min(THUMB_SIDE, shortest, base.size[0])
        media_type, extension, _ = OUTPUTS[fmt]
        name = THUMB_FILE + extension
        thumb = base if base.size[0] == side else base.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        write(thumb, out_dir / name, fmt, icc)
        out["thumbnail"] = {"file": name, "media_type": media_type, "width": side, "height": side}
    if variants:
        made = []
        for size in sorted(set(variants)):
            if size > min(shortest, base.size[0]):
                continue  # never upscaled
            name = VARIANT_FILE.format(size=size)
            small = base if base.size[0] == size else base.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
            write(small, out_dir / name, "WEBP", icc if small.mode in ("RGB", "RGBA") else None)
            made.append({"size": size, "file": name, "media_type": "image/webp", "width": size, "height": size})
        out["variants"] = made
    return out


def derive(source: str, media_type: str, out_dir: str, thumbnail: bool, variants: Sequence[int], max_pixels: int) -> dict:
    """Width and height of an image or video; with `thumbnail`, a centred square of side
    min(256, w, h) in the original's format (JPEG, PNG, WebP; else PNG); with `variants`, square
    WebP images of those sides (none larger than the image). Failures leave the fields None."""
    result: dict[str, Any] = {"width": None, "height": None, "thumbnail": None, "variants": None}
    target = max([THUMB_SIDE, *variants]) if (thumbnail or variants) else None
    try:
        with _guarded(max_pixels):
            if media_type.startswith("video/"):
                frame = video.first_frame(source, media_type, max_pixels, decode=bool(target))
                if frame is None:
                    return result
                pic, upright = frame
                result["width"], result["height"] = upright
                if pic is None:
                    return result
                fmt, icc = "PNG", None
                pic = _to_8bit(pic)
            else:
                with open_image(source, max_pixels) as im:
                    fmt = THUMB_FORMATS.get(im.format or "", "PNG")
                    if target is None:
                        result["width"], result["height"] = _upright_size(im)
                        return result
                    pic, upright, icc = decode(im, target)
                result["width"], result["height"] = upright
            result.update(_thumbnails(pic, upright, fmt, icc, Path(out_dir), thumbnail, variants))
    except (TooManyPixels, Undecodable, video.VideoError):
        result["thumbnail"] = None
    return result


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """Width and height as displayed, from the header alone (no pixel is decoded)."""
    width, height = im.size
    if im.format == "PNG" and "exif" not in im.info:
        return width, height  # PNG keeps EXIF after the pixels: reading it would decode them
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def avatar(source: str, out: str, max_side: int, max_pixels: int) -> dict:
    """An avatar made of an uploaded image: upright, centre-cropped to a square of side
    min(w, h), brought down to `max_side` when larger (never up), written to `out` in the
    original format (GIF: its first frame; formats other than JPEG/PNG/WebP/GIF: PNG) without any
    of the source's metadata. Returns the status and, when "ok", what was written."""
    try:
        with _guarded(max_pixels), open_image(source, max_pixels) as im:
            fmt = AVATAR_FORMATS.get(im.format or "", "PNG")
            pic, _, icc = decode(im, max_side)
    except TooManyPixels:
        return {"status": "too_large"}
    except Undecodable:
        return {"status": "undecodable"}
    width, height = pic.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    pic = pic.crop((left, top, left + side, top + side))
    if side > max_side:
        pic = pic.resize((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        side = max_side
    options = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    path = Path(out)
    write(pic, path, fmt, icc, **options)
    size, md5, sha1, sha256 = digest(path)
    media_type, extension, _ = OUTPUTS[fmt]
    return {
        "status": "ok",
        "media_type": media_type,
        "extension": extension,
        "side": side,
        "size": size,
        "md5": md5,
        "sha1": sha1,
        "sha256": sha256,
    }


def digest(path: Path) -> tuple[int, str, str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            md5.update(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return size, md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest()
