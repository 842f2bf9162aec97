"""Image work behind one small interface: what the file manager asks of an image engine.

`PoolImaging` (imaging/pool.py) runs the pure functions of imaging/pillow.py in worker processes;
`NoImaging` stores content without looking inside it (maintenance commands, tests of other parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Avatars: the side they are brought down to, and the WebP thumbnail sizes made below that side.
AVATAR_SIDE = 1536
AVATAR_SIZES = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768)


@dataclass
class Derived:
    """What was learnt from, and made of, one stored content."""

    width: int | None = None
    height: int | None = None
    thumbnail: dict | None = None  # {"file", "media_type", "width", "height"} inside the thumb dir
    # square WebP variants (avatars): [{"size", "file", "media_type", "width", "height"}]; None: not made
    variants: list[dict] | None = None

    def as_doc(self) -> dict:
        return {"width": self.width, "height": self.height, "thumbnail": self.thumbnail, "variants": self.variants}


@dataclass
class Avatar:
    """The outcome of turning an upload into an avatar (written to the path the caller gave)."""

    status: str  # "ok", "too_large" (more pixels than allowed), "undecodable", "failed" (timeout, crash)
    media_type: str = ""
    extension: str = ""  # the output format's usual extension, with the dot
    side: int = 0
    size: int = 0
    md5: str = ""
    sha1: str = ""
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Imaging(Protocol):
    async def derive(
        self, source: Path, media_type: str, out_dir: Path, thumbnail: bool, variants: Sequence[int] = ()
    ) -> Derived: ...

    async def avatar(self, source: Path, out: Path, max_side: int = AVATAR_SIDE) -> Avatar: ...

    async def close(self) -> None: ...


class NoImaging:
    """Stores content without looking inside it."""

    async def derive(
        self, source: Path, media_type: str, out_dir: Path, thumbnail: bool, variants: Sequence[int] = ()
    ) -> Derived:
        return Derived()

    async def avatar(self, source: Path, out: Path, max_side: int = AVATAR_SIDE) -> Avatar:
        return Avatar("undecodable")

    async def close(self) -> None:
        return None
