"""Prosody's mod_http_file_share in external mode, pointed at gallery.

Prosody answers the XEP-0363 slot request itself and hands the client a PUT URL
`<http_file_share_base_url>/<slot>/<filename>` with `Authorization: Bearer <JWT>`: HS256 keyed
with `http_file_share_secret` verbatim (Prosody's util/jwt.lua), claims `sub` (the uploader's
bare JID), `iat`, `exp` (iat + 300 in 0.12, + 600 in 13), `slot`, `expires` (when Prosody wants
the file gone; absent when its expiry is off), `filename`, `filesize`, `filetype`.

`admit` makes every check that Prosody's own PUT handler makes before the body, with the same
answers (0.12: no or malformed bearer 401 with `WWW-Authenticate: Bearer`, bad token 401, `exp`
passed 410, slot not the token's 400, Content-Length not `filesize` 413, slot already uploaded
409), then gallery's own upload admission: the size limit (413), the uploader's quota (403), the
rate limit and the concurrent-upload gate (429, 503). The token is checked
by the small HMAC below rather than a JWT library: Prosody signs exactly one form (HS256, this
header), and accepting nothing else leaves no algorithm to confuse.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from models.db import utcnow
from models.files import Files
from models.users import Users
from services import access
from services.errors import Conflict, Forbidden, Gone, Invalid, TooLarge, Unauthorized
from services.files import Admission, FileManager
from settings import AuthSettings
from xmpp import jids

_BEARER = re.compile(r"^Bearer (.+)$")  # Prosody matches "^Bearer (.*)" exactly
_JWT = re.compile(r"^(([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+))\.([A-Za-z0-9_-]+)$")
# The filename Prosody accepted (no "/"), within what a file name may be here.
MAX_FILENAME = 1024
MAX_TOKEN = 16 * 1024
# The slot is the archive id Prosody's storage gave the request (16 base64url characters with
# the internal and SQL stores); it becomes the file's slot_id, so it must be a path segment.
_SLOT = re.compile(r"^[A-Za-z0-9_~.-]{8,128}$")


@dataclass(frozen=True)
class ShareGrant:
    """One upload Prosody granted: who, which slot, what file, until when it may be served."""

    owner: str
    slot: str
    filename: str
    size: int
    content_type: str
    expires_before: dt.datetime | None


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(secret: str, claims: dict[str, Any]) -> str:
    """A token as Prosody's util/jwt.lua signs it (for tests and the benchmark)."""
    signed = _b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64url(mac)}"


def decode(token: str, secret: str) -> dict[str, Any]:
    """The claims of a token signed with `secret`, or Unauthorized (as util/jwt.lua verifies:
    the encoding, an HS256 header, the signature compared in constant time, a JSON object)."""
    match = _JWT.match(token) if len(token) <= MAX_TOKEN else None
    if match is None:
        raise Unauthorized("invalid token", error="invalid_token")
    signed, header_part, payload_part, signature = match.groups()
    try:
        header = json.loads(_unb64url(header_part))
        given = _unb64url(signature)
    except (ValueError, binascii.Error):
        raise Unauthorized("invalid token", error="invalid_token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthorized("invalid token: only HS256 is accepted", error="invalid_token")
    expected = hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("invalid token: bad signature", error="invalid_token")
    try:
        claims = json.loads(_unb64url(payload_part))
    except (ValueError, binascii.Error):
        raise Unauthorized("invalid token", error="invalid_token") from None
    if not isinstance(claims, dict):
        raise Unauthorized("invalid token", error="invalid_token")
    return claims


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _grant(claims: dict[str, Any]) -> ShareGrant:
    """The upload the claims describe; Unauthorized when they are not what Prosody signs."""
    sub, slot, name, size, kind = (claims.get(k) for k in ("sub", "slot", "filename", "filesize", "filetype"))
    expires = claims.get("expires")
    if not (isinstance(sub, str) and isinstance(slot, str) and isinstance(name, str)):
        raise Unauthorized("invalid token: claims missing", error="invalid_token")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Unauthorized("invalid token: filesize", error="invalid_token")
    if not _SLOT.match(slot) or not name or "/" in name or "\x00" in name or len(name) > MAX_FILENAME:
        raise Unauthorized("invalid token: slot or filename", error="invalid_token")
    if expires is not None and not _number(expires):
        raise Unauthorized("invalid token: expires", error="invalid_token")
    try:
        owner = jids.bare(sub)
    except jids.BadJid:
        raise Unauthorized("invalid token: sub is not a user's JID", error="invalid_token") from None
    expires_before = None
    if expires is not None:
        try:
            expires_before = dt.datetime.fromtimestamp(expires, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise Unauthorized("invalid token: expires", error="invalid_token") from None
    content_type = kind if isinstance(kind, str) and kind else "application/octet-stream"
    return ShareGrant(owner, slot, name, size, content_type, expires_before)


class ProsodyShare:
    """Admits the PUTs Prosody signed; the bytes then go through the file manager's admission and
    store like any upload's."""

    def __init__(self, secret: str, auth: AuthSettings, files: Files, users: Users, manager: FileManager) -> None:
        self.secret = secret
        self.auth = auth
        self._files = files
        self._users = users
        self.manager = manager

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    async def admit(
        self, slot: str, authorization: str | None, length: int | None, now: dt.datetime | None = None
    ) -> tuple[ShareGrant, Admission]:
        """Everything decided before the body, in the order Prosody's handler decides it, then
        the file manager's admission (size limit, the uploader's quota, rate and concurrency)."""
        match = _BEARER.match(authorization or "")
        if match is None:
            raise Unauthorized("a Bearer token from Prosody is required")
        claims = decode(match.group(1).strip(), self.secret)
        if not _number(claims.get("exp")):
            raise Unauthorized("invalid token: no exp", error="invalid_token")
        if claims["exp"] < (now or utcnow()).timestamp():
            raise Gone("the upload token has expired: request a new slot")
        grant = _grant(claims)
        if grant.slot != slot:
            raise Invalid("the token is for another slot")
        if length is not None and length != grant.size:
            raise TooLarge(message=f"Content-Length {length} is not the slot's size {grant.size}")
        if await self._files.slot_taken(slot):
            raise Conflict("this slot has been uploaded already")
        why = access.refusal(self.auth, grant.owner, grant.owner.rpartition("@")[2])
        if why is not None:
            raise Forbidden(why)
        await self._users.create(grant.owner)  # Prosody's users need not have logged in here
        admission = await self.manager.admit(grant.owner, length=grant.size, declared=grant.size)
        admission.limit = grant.size  # exactly the slot's bytes (more: 413, as Prosody answers)
        return grant, admission
