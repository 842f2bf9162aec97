"""The first frame of a video, through PyAV (FFmpeg bundled in its wheels). Runs in the workers.

Only the demuxer that matches the sniffed media type is used (never FFmpeg's format guessing,
which would let a text file name other files or URLs: HLS playlists, concat lists). The frame
size is checked against the pixel limit before anything is decoded, and at most a bounded number
of packets is read while looking for the first picture.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

try:
    import av
except ImportError:  # pragma: no cover - PyAV is in requirements.txt; without it videos get no thumbnail
    av = None

DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/3gpp": "mov",
    "video/3gpp2": "mov",
    "video/x-m4v": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
    "video/x-msvideo": "avi",
    "video/mpeg": "mpeg",
    "video/mp2t": "mpegts",
    "video/x-flv": "flv",
    "video/ogg": "ogg",
}
MAX_PACKETS = 600


class VideoError(Exception):
    """No frame could be read within the limits."""


def available() -> bool:
    return av is not None


def first_frame(
    path: str | Path, media_type: str, max_pixels: int, decode: bool = True
) -> tuple[Image.Image | None, tuple[int, int]] | None:
    """(the first picture as displayed, or None when `decode` is false; its display width and
    height), or None when this is not a video PyAV can open here."""
    demuxer = DEMUXERS.get(media_type)
    if av is None or demuxer is None:
        return None
    try:
        with av.open(str(path), format=demuxer, options={"protocol_whitelist": "file"}) as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                return None
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height or width * height > max_pixels:
                raise VideoError("no frame size, or more pixels than allowed")
            if not decode:
                return None, (width, height)
            stream.thread_type = "AUTO"
            for count, packet in enumerate(container.demux(stream)):
                if count >= MAX_PACKETS:
                    break
                for frame in packet.decode():
                    if frame.width * frame.height > max_pixels:
                        raise VideoError("frame larger than allowed")
                    image = frame.to_image()
                    rotation = getattr(frame, "rotation", 0) or 0
                    if rotation % 360:
                        image = image.rotate(rotation, expand=True)  # counter-clockwise, as the display matrix says
                    return image, image.size
    except VideoError:
        raise
    except Exception as exc:  # any FFmpeg error: no frame
        raise VideoError(str(exc)) from None
    raise VideoError("no picture in the first packets")
