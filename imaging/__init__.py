"""Image work behind one small interface: what the file manager asks of an image engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class Derived:
    """What was learnt from, and made of, one stored content."""

    width: int | None = None
    height: int | None = None
    thumbnail: dict | None = None  # {"file", "media_type", "width", "height"} inside the thumb dir

    def as_doc(self) -> dict:
        return {"width": self.width, "height": self.height, "thumbnail": self.thumbnail}


class Imaging(Protocol):
    async def derive(self, source: Path, media_type: str, out_dir: Path, thumbnail: bool) -> Derived: ...

    async def close(self) -> None: ...


class NoImaging:
    """Stores content without looking inside it."""

    async def derive(self, source: Path, media_type: str, out_dir: Path, thumbnail: bool) -> Derived:
        return Derived()

    async def close(self) -> None:
        return None
