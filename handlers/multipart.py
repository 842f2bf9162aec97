"""Reading a multipart/form-data upload as it streams: the file part straight into the upload's
bytes, the small fields in memory, and the file name as the client really sent it."""

from __future__ import annotations

import re

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget

from services.errors import Invalid

FIELD_LIMIT = 16 * 1024
# Part headers are read from at most this much of the body before the file part's data begins.
HEADER_SCAN_LIMIT = 256 * 1024
_FILE_PART = re.compile(rb'content-disposition:[^\r\n]*\bname="file"[^\r\n]*?;\s*filename="((?:[^"\\\r\n]|\\.)*)"', re.IGNORECASE)
_QUOTED_PAIR = re.compile(r'\\(["\\])')
_FILE_PART_TYPE = re.compile(
    rb'content-disposition:[^\r\n]*\bname="file"[^\r\n]*(?:\r\n(?!\r\n)[^\r\n]*)*?\r\ncontent-type:[ \t]*([^\r\n]*)',
    re.IGNORECASE,
)


def raw_filename(headers: bytes) -> str | None:
    """The file part's `filename="…"` as sent. Browsers (the HTML standard) leave backslashes as
    they are and escape only quotes and newlines, so `C:\\Users\\me\\doc.txt` arrives with single
    backslashes, which an RFC 2045 reading would drop; clients that send quoted-pairs (`\\\\`,
    `\\"`) are read as such. None when the headers do not have it (then the parser's value)."""
    matches = list(_FILE_PART.finditer(headers))
    if not matches:
        return None
    return _QUOTED_PAIR.sub(r"\1", matches[-1].group(1).decode("utf-8", "replace"))


class FieldTarget(BaseTarget):
    """A small form field, kept in memory up to FIELD_LIMIT bytes."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.chunks: list[bytes] = []
        self.size = 0

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > FIELD_LIMIT:
            raise Invalid(f"{self.name}: too long", fields={self.name: "too long"})
        self.chunks.append(chunk)

    @property
    def value(self) -> str | None:
        if not self._started:
            return None
        try:
            return b"".join(self.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{self.name}: not UTF-8", fields={self.name: "not UTF-8"}) from None


class FileTarget(BaseTarget):
    """The `file` part, handed piece by piece to `feed`."""

    def __init__(self, feed: object) -> None:
        super().__init__()
        self.feed = feed
        self.parts = 0

    def on_start(self) -> None:
        self.parts += 1
        if self.parts > 1:
            raise Invalid("only one file part is allowed", fields={"file": "only one file part is allowed"})

    def on_data_received(self, chunk: bytes) -> None:
        self.feed(chunk)  # type: ignore[operator]

    @property
    def complete(self) -> bool:
        return self.parts > 0 and self._finished


class MultipartUpload:
    """One upload's form: `feed` the body as it arrives; then the fields and the file name."""

    def __init__(self, headers: dict[str, str], fields: tuple[str, ...], feed: object) -> None:
        try:
            self.parser = StreamingFormDataParser(headers)
        except Exception:
            raise Invalid("malformed multipart Content-Type (no boundary)") from None
        self.file = FileTarget(feed)
        self.parser.register("file", self.file)
        self.fields = {name: FieldTarget(name) for name in fields}
        for name, target in self.fields.items():
            self.parser.register(name, target)
        self._head = bytearray()

    def register(self, name: str, target: FieldTarget) -> None:
        self.fields[name] = target
        self.parser.register(name, target)

    def data_received(self, chunk: bytes) -> None:
        if self.file.parts == 0 and len(self._head) < HEADER_SCAN_LIMIT:
            self._head += chunk[: HEADER_SCAN_LIMIT - len(self._head)]
        self.parser.data_received(chunk)

    @property
    def filename(self) -> str | None:
        return raw_filename(bytes(self._head)) or self.file.multipart_filename

    @property
    def content_type(self) -> str | None:
        """The file part's declared Content-Type; an empty or absent one counts as none (the
        parser would report text/plain, the MIME default, for both)."""
        found = list(_FILE_PART_TYPE.finditer(bytes(self._head)))
        if not found:
            return None
        return found[-1].group(1).decode("latin-1").strip() or None

    def values(self) -> dict[str, str | None]:
        return {name: target.value for name, target in self.fields.items()}
