"""What stored content is called and what type it is: name sanitising and type sniffing."""

from __future__ import annotations

import re
import unicodedata

import magic

GENERIC_TYPES = {"application/octet-stream", "inode/x-empty", "application/x-empty", "text/plain"}
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_magic = magic.Magic(mime=True)


def well_formed(media_type: str | None) -> str | None:
    """A lower-cased `type/subtype` (parameters dropped), or None if it is not one."""
    if not media_type:
        return None
    value = media_type.split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.match(value) else None


def media_type(head: bytes, declared: str | None) -> str:
    """The type detected from the content's first bytes; the declared one only when detection
    finds nothing specific (and it is well-formed and says more than octet-stream); else what
    detection said (text/plain) or application/octet-stream."""
    try:
        detected = well_formed(_magic.from_buffer(bytes(head))) if head else None
    except magic.MagicException:
        detected = None
    if detected and detected not in GENERIC_TYPES:
        return detected
    declared_type = well_formed(declared)
    if declared_type and declared_type != "application/octet-stream":
        return declared_type
    return detected if detected == "text/plain" else "application/octet-stream"


def clean_name(name: str | None) -> str:
    """The client's file name without path parts or control characters, at most 255 bytes."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip()
    if name in ("", ".", ".."):
        return "file"
    encoded = name.encode("utf-8")
    if len(encoded) > 255:
        name = encoded[:255].decode("utf-8", "ignore").strip() or "file"
    return name
