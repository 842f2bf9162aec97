"""The slot manager: XEP-0363 upload slots, from the slot request to the end of its PUT.

The rules the XMPP component and the PUT route share live here; neither touches a model.

- `issue()` answers a slot request: who may upload (the allowed domains, `auth.deny`), then the
  file manager's upload admission (the size limit, the quota, the rate limit shared with REST
  uploads), turned into XEP-0363 errors. An issued slot's size is reserved in the owner's `used`
  at once (one atomic update), so two slots can never together overrun the quota; the reservation
  is handed back when the slot expires or its PUT starts.
- The PUT token is `<expires>.<mac>`: an HMAC-SHA256, keyed from the component secret, over the
  slot id, owner, size, content type and expiry. It is sent as `Authorization: Bearer <token>`.
- `claim()` checks a PUT before its body (token, state, expiry, length, type) and moves the slot
  to `uploading`; from then on the upload takes the ordinary pipeline, whose atomic quota check at
  commit applies. `finish()` / `fail()` end it.
- `sweep()` ends expired slots and hands their reservations back; every process may run it.

Crash safety: the reservation is made before the slot document is written and handed back after
the slot left `issued`. A crash between the two steps leaves `used` too high by one slot's size:
fsck recomputes `used` as the owner's files plus their `issued` slots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

from models.db import utcnow
from models.slots import EXPIRED, FAILED, ISSUED, UPLOADING, USED, Slot, Slots
from models.users import Users
from services import access
from services.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    QuotaExceeded,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from services.files import FileManager
from services.render import iso, media_url
from settings import Settings
from storage.content import clean_name
from xmpp import jids

log = logging.getLogger("gallery.slots")

PURPOSES = ("message", "profile", "ephemeral", "permanent")
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"^([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
SWEEP_INTERVAL = 30.0


class SlotRefused(Exception):
    """A slot request answered with an XMPP error: `kind` (modify, wait, cancel, auth), the
    stanza error `condition`, a text for the user, and the XEP-0363 extras."""

    def __init__(
        self, kind: str, condition: str, text: str, *, max_file_size: int | None = None, retry: dt.datetime | None = None
    ) -> None:
        super().__init__(text)
        self.kind = kind
        self.condition = condition
        self.text = text
        self.max_file_size = max_file_size
        self.retry = retry


@dataclass
class SlotRequest:
    """A slot request as it arrived (attribute values unparsed)."""

    requester: str
    filename: str | None
    size: str | None
    content_type: str | None = None
    purposes: list[str] = field(default_factory=list)
    expire_before: str | None = None


@dataclass
class IssuedSlot:
    slot: Slot
    put_url: str
    get_url: str
    headers: list[tuple[str, str]]


def human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def parse_xmpp_datetime(text: str) -> dt.datetime:
    """An XEP-0082 DateTime (`2025-09-10T23:08:25Z`, fractions and offsets allowed), in UTC."""
    value = text.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value):
        raise ValueError(text)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.UTC)


class SlotManager:
    def __init__(self, settings: Settings, slots: Slots, users: Users, files: FileManager) -> None:
        self.settings = settings
        self.component = settings.xmpp.component
        self.slots = slots
        self.users = users
        self.files = files
        self.domains = frozenset(self.component.allowed_domains())
        secret = self.component.secret.encode()
        self.key = hmac.new(secret, b"gallery upload slot token v1", hashlib.sha256).digest()
        self._sweeper: asyncio.Task | None = None
        self._background: set[asyncio.Future] = set()

    @property
    def purposes(self) -> tuple[str, ...]:
        """The purposes offered (disco features)."""
        return PURPOSES if self.component.permanent else PURPOSES[:3]

    # -- issue -----------------------------------------------------------------------------
    async def issue(self, request: SlotRequest) -> IssuedSlot:
        owner = self._owner(request.requester)
        name, size, content_type = self._file(request)
        context, expires_before = self._purpose(request)
        await self._admit(owner, size)
        await self.users.create(owner)
        reserved = await self.users.reserve(owner, size)
        if not reserved and not (await self._expire_due(owner) and await self.users.reserve(owner, size)):
            raise await self._over_quota(owner, size)
        now = utcnow()
        slot = Slot(
            id=secrets.token_urlsafe(18),
            owner=owner,
            name=name,
            size=size,
            content_type=content_type,
            context=context,
            expires_before=expires_before,
            created_at=now,
            expires=now + dt.timedelta(seconds=self.settings.limits.slot_ttl),
        )
        try:
            await self.slots.insert(slot)
        except BaseException:
            await self.users.release(owner, size)
            raise
        log.info("slot issued", extra={"user": owner, "slot_id": slot.id, "size": size})
        public = self.settings.public_url
        return IssuedSlot(
            slot=slot,
            put_url=f"{public}/upload/{slot.id}/{quote(name, safe='')}",
            get_url=media_url(public, slot.id, name),
            headers=[("Authorization", f"Bearer {self.token(slot)}")],
        )

    async def _admit(self, owner: str, size: int) -> None:
        """The file manager's upload admission (size, quota, rate limit), as XEP-0363 errors."""
        for attempt in range(2):
            try:
                # no bytes come with a slot request: it takes no place among uploads in flight
                admission = await self.files.admit(owner, declared=size, hold=False)
            except TooLarge:
                limit = self.settings.limits.max_file_size
                raise SlotRefused(
                    "modify",
                    "not-acceptable",
                    f"file too large: {human(size)}, at most {human(limit)} ({limit} bytes)",
                    max_file_size=limit,
                ) from None
            except QuotaExceeded:
                if attempt == 0 and await self._expire_due(owner):
                    continue  # expired slots of theirs held the room
                raise await self._over_quota(owner, size) from None
            except (RateLimited, Unavailable) as exc:
                wait = exc.retry_after or 1
                retry = utcnow() + dt.timedelta(seconds=wait)
                raise SlotRefused("wait", "resource-constraint", f"{exc.message}: try again in {wait} s", retry=retry) from None
            admission.close()  # only a slot so far: the PUT is admitted when it comes
            return

    def _owner(self, requester: str) -> str:
        try:
            jid = jids.parse(requester)
        except jids.BadJid:
            raise SlotRefused("auth", "forbidden", "only user accounts may request upload slots") from None
        if jid.domain not in self.domains:
            raise SlotRefused("auth", "forbidden", f"users of {jid.domain} may not upload to this service")
        if access.refusal(self.settings.auth, jid.bare, jid.domain) is not None:
            raise SlotRefused("auth", "forbidden", "this account may not upload to this service")
        return jid.bare

    @staticmethod
    def _file(request: SlotRequest) -> tuple[str, int, str | None]:
        if not request.filename or not request.filename.strip():
            raise SlotRefused("modify", "bad-request", "the filename attribute is required")
        if "\x00" in request.filename:
            raise SlotRefused("modify", "bad-request", "the filename contains a NUL character")
        text = (request.size or "").strip()
        if not text.isdigit() or len(text) > 18:
            raise SlotRefused("modify", "bad-request", "the size attribute must be the file's size in bytes")
        content_type = (request.content_type or "").strip().lower() or None
        if content_type is not None and not _MEDIA_TYPE.match(content_type):
            raise SlotRefused("modify", "bad-request", "content-type must be a media type such as image/jpeg")
        return clean_name(request.filename), int(text), content_type

    def _purpose(self, request: SlotRequest) -> tuple[str, dt.datetime | None]:
        if len(request.purposes) > 1:
            raise SlotRefused("modify", "bad-request", "at most one upload purpose")
        purpose = request.purposes[0] if request.purposes else "message"
        if purpose not in self.purposes:
            raise SlotRefused("cancel", "feature-not-implemented", f"the {purpose} upload purpose is not offered here")
        if purpose != "ephemeral" or request.expire_before is None:
            # an ephemeral request without expire-before (slixmpp 1.17 sends none): the
            # operator's retention for ephemeral files decides
            return purpose, None
        try:
            expires_before = parse_xmpp_datetime(request.expire_before)
        except ValueError:
            raise SlotRefused("modify", "bad-request", "expire-before must be an XEP-0082 DateTime") from None
        if expires_before <= utcnow():
            raise SlotRefused("modify", "bad-request", "expire-before is in the past")
        return purpose, expires_before

    async def _over_quota(self, owner: str, size: int) -> SlotRefused:
        quota = await self.users.quota(owner)
        public = self.settings.public_url
        text = (
            f"quota exceeded: {human(quota.used)} of {human(quota.quota)} used, this file needs {human(size)}; "
            f"free space by deleting files at {public}/ or with the REST API (DELETE {public}/api/v1/files/)"
        )
        pending = [(s.expires, s.size) for s in await self.slots.issued_of(owner)]
        retry = await self.files.room_at(owner, size, pending, quota)
        if retry is not None:
            return SlotRefused("wait", "resource-constraint", f"{text}; expiring uploads make room at {iso(retry)}", retry=retry)
        return SlotRefused("cancel", "resource-constraint", text)

    # -- tokens ----------------------------------------------------------------------------
    def _mac(self, slot: Slot, expires: int) -> bytes:
        claims = "\0".join((slot.id, slot.owner, str(slot.size), slot.content_type or "", str(expires)))
        return hmac.new(self.key, claims.encode(), hashlib.sha256).digest()

    def token(self, slot: Slot) -> str:
        expires = int(slot.expires.timestamp())
        mac = base64.urlsafe_b64encode(self._mac(slot, expires)).rstrip(b"=").decode()
        return f"{expires}.{mac}"

    def _verify(self, slot: Slot, token: str) -> bool:
        match = _TOKEN.match(token)
        assert match is not None
        expires = int(match.group(1))
        given = base64.urlsafe_b64decode(match.group(2) + "=")
        return expires == int(slot.expires.timestamp()) and hmac.compare_digest(given, self._mac(slot, expires))

    # -- the PUT ---------------------------------------------------------------------------
    async def claim(
        self, slot_id: str, name: str, authorization: str | None, length: int | None, content_type: str | None
    ) -> Slot:
        """Check a PUT before its body and claim the slot for it: the slot is `uploading` and its
        reservation handed back (the upload's own quota check at commit applies). Errors: 401 no
        or malformed token, 404 no such slot, 403 wrong token, 409 used, 410 expired, 413 a
        Content-Length other than the slot's size, 415 a Content-Type other than the slot's."""
        if not authorization:
            raise Unauthorized("this upload needs the Authorization header from its slot")
        match = _BEARER.match(authorization)
        if not match or not _TOKEN.match(match.group(1)):
            raise Unauthorized("malformed upload token", error="invalid_token")
        slot = await self.slots.get(slot_id)
        if slot is None or slot.name != name:
            raise NotFound("no such upload slot")
        if not self._verify(slot, match.group(1)):
            raise Forbidden("the upload token does not belong to this slot")
        if slot.state in (USED, UPLOADING, FAILED):
            raise Conflict("this slot was already used: request a new slot")
        if slot.state == EXPIRED or utcnow() >= slot.expires:
            await self._expire(slot)
            raise Gone("this slot has expired: request a new slot")
        if length is not None and length != slot.size:
            raise TooLarge(message=f"Content-Length {length} differs from the slot's size {slot.size}")
        if content_type and slot.content_type:
            given = content_type.split(";")[0].strip().lower()
            if given != slot.content_type:
                raise Unsupported(f"Content-Type {given} differs from the slot's {slot.content_type}")
        if not await self.slots.move(slot.id, ISSUED, UPLOADING):
            raise Conflict("this slot was already used: request a new slot")
        await self.users.release(slot.owner, slot.size)
        slot.state = UPLOADING
        return slot

    async def unclaim(self, slot: Slot) -> None:
        """The PUT was refused before its body after all (the service is busy): the slot is
        issued again, with its reservation, if the room is still there; else it is spent."""
        if await self.users.reserve(slot.owner, slot.size):
            if await self.slots.move(slot.id, UPLOADING, ISSUED):
                slot.state = ISSUED
                return
            await self.users.release(slot.owner, slot.size)
        await self.fail(slot)

    async def finish(self, slot: Slot) -> None:
        await self.slots.move(slot.id, UPLOADING, USED)
        slot.state = USED

    async def fail(self, slot: Slot) -> None:
        """The PUT did not finish: the slot is spent (a new one may be requested)."""
        if await self.slots.move(slot.id, UPLOADING, FAILED):
            log.info("upload through slot failed", extra={"user": slot.owner, "slot_id": slot.id})
        slot.state = FAILED

    def fail_soon(self, slot: Slot) -> None:
        """fail() from synchronous code (a closed connection); the task is kept referenced."""
        task = asyncio.ensure_future(self.fail(slot))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- expiry ----------------------------------------------------------------------------
    async def _expire(self, slot: Slot) -> bool:
        """End an issued slot whose time is up; only the process that ends it hands back."""
        if await self.slots.move(slot.id, ISSUED, EXPIRED):
            await self.users.release(slot.owner, slot.size)
            return True
        return False

    async def _expire_due(self, owner: str) -> bool:
        now = utcnow()
        ended = [await self._expire(s) for s in await self.slots.issued_of(owner) if s.expires <= now]
        return any(ended)

    async def sweep(self) -> int:
        """End every expired issued slot; returns how many this call ended."""
        ended = 0
        while True:
            due = await self.slots.expired_issued(utcnow())
            for slot in due:
                ended += await self._expire(slot)
            if len(due) < 500:
                return ended

    def start(self, interval: float = SWEEP_INTERVAL) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(interval), name="slot-sweeper")

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            try:
                ended = await self.sweep()
                if ended:
                    log.info("%d expired upload slots ended", ended)
            except Exception as exc:  # the database may be down for a while: try again later
                log.warning("slot sweep failed: %s", exc)
            await asyncio.sleep(interval)
