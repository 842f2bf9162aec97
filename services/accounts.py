"""The account manager: login codes over XMPP, tokens, account deletion, admin quota and list.

Abuse limits live in MongoDB (shared by every process, kept across restarts): code requests per
client address and per JID per hour, a minimum interval between two requests for one JID (kept
exactly, in the code document), and code attempts per address per hour; each one answers 429 with
Retry-After. Client addresses are counted per IPv4 address and per IPv6 /64.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.codes import DIGITS, Codes, IssuedCode, Outcome
from models.criteria import Criteria, Page
from models.files import Files
from models.ratelimits import RateLimits
from models.tokens import TokenInfo, Tokens
from models.users import Users
from services import access, render
from services.errors import Forbidden, Invalid, NotFound, RateLimited, Unavailable
from services.files import FileManager
from services.params import INT64_MAX
from services.render import iso
from xmpp import jids
from xmpp.client import XmppUnavailable

if TYPE_CHECKING:
    from slixmpp import JID

    from services.evaluation import ConsoleCodes
    from settings import Settings
    from xmpp.client import XmppClient

log = logging.getLogger("gallery.accounts")

HOUR = 3600
KINDS = ("message", "iq")
MAX_QUOTA = INT64_MAX  # MongoDB's largest integer
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")


def address_key(address: str | None) -> str:
    """Whom a per-address limit counts: the IPv4 address, or the IPv6 /64 (one subscriber)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def parse_code(value: Any) -> str:
    """A code is a string of exactly 6 digits; an integer is zero-padded."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**DIGITS:
        return f"{value:0{DIGITS}d}"
    if isinstance(value, str) and _CODE.fullmatch(value.strip()):
        return value.strip()
    raise Invalid("code: expected 6 digits", fields={"code": f"expected a string of {DIGITS} digits"})


@dataclass
class Login:
    token: str
    token_id: str
    expires: str | None


class AccountManager:
    def __init__(
        self,
        settings: Settings,
        users: Users,
        tokens: Tokens,
        codes: Codes,
        ratelimits: RateLimits,
        files: Files,
        file_manager: FileManager,
        xmpp: XmppClient | None,
    ) -> None:
        self.settings = settings
        self.auth = settings.auth
        self.users = users
        self.tokens = tokens
        self.codes = codes
        self.ratelimits = ratelimits
        self.files = files
        self.file_manager = file_manager
        self.xmpp = xmpp
        self.admins = frozenset(settings.admins)  # normalised when the settings were loaded
        # The evaluation set-up's code sender for its one account (services/evaluation.py), or None.
        self.console: ConsoleCodes | None = None

    @property
    def auth_url(self) -> str:
        return f"{self.settings.public_url}/api/v1/account/xmpp_auth/"

    # -- rules -----------------------------------------------------------------------------
    def user_jid(self, text: str | None, name: str = "jid") -> JID:
        if text is None:
            raise Invalid(f"{name}: required", fields={name: "required"})
        try:
            return jids.parse(text)
        except jids.BadJid as exc:
            raise Invalid(f"{name}: {exc}", fields={name: str(exc)}) from None

    def check_allowed(self, jid: JID) -> None:
        why = access.refusal(self.auth, jid.bare, jid.domain)
        if why is not None:
            raise Forbidden(why)

    async def _limit(self, key: str, limit: int, message: str) -> None:
        wait = await self.ratelimits.hit(key, limit, HOUR)
        if wait is not None:
            raise RateLimited(message, wait)

    # -- codes -----------------------------------------------------------------------------
    async def request_code(self, jid_text: str | None, kind: str | None, address: str | None) -> dict:
        """Make a code for the JID and send it over XMPP; 201 body. No user record is created."""
        jid = self.user_jid(jid_text)
        kind = kind or "message"
        if kind not in KINDS:
            raise Invalid("type: expected message or iq", fields={"type": "expected message or iq"})
        if kind == "iq" and not jid.resource:
            raise Invalid("type=iq needs a full JID", fields={"jid": "type=iq needs a full JID (with a resource)"})
        self.check_allowed(jid)
        bare = jid.bare
        xmpp = self.console if self.console is not None and bare == self.console.jid else self._connected_xmpp()
        await self._limit(
            f"codes:addr:{address_key(address)}", self.auth.codes_per_address_per_hour, "too many code requests from this address"
        )
        wait, after_use = await self.codes.admission(bare, jid.full, kind)
        if wait:
            raise RateLimited(f"a code was requested for this JID less than {self.auth.code_interval} s ago", wait)
        # A request right after a login (the last code was used) is not counted against the JID:
        # only its owner can use codes, so a client that logs in on every reconnect never runs out,
        # while codes nobody uses (someone else asking) are limited per JID and hour.
        issued: IssuedCode | int = await self.codes.issue(bare, jid.full, kind, after_use=True) if after_use else 0
        if not isinstance(issued, IssuedCode):
            await self._limit(f"codes:jid:{bare}", self.auth.codes_per_jid_per_hour, "too many code requests for this JID")
            issued = await self.codes.issue(bare, jid.full, kind)
        if not isinstance(issued, IssuedCode):
            raise RateLimited(f"a code was requested for this JID less than {self.auth.code_interval} s ago", issued)
        request_id = issued.request_id

        async def denied() -> None:
            await self.codes.void(bare, request_id)
            log.info("code for %s voided: the user refused the request (request %s)", bare, request_id)

        try:
            await xmpp.send_code(
                jid,
                issued.code,
                self.auth_url,
                kind,
                on_denied=denied,
                answer_within=self.auth.code_ttl,
                stanza_id=request_id,
            )
        except XmppUnavailable as exc:
            await self.codes.withdraw(bare, request_id)
            log.warning("code for %s not delivered (request %s): %s", bare, request_id, exc)
            raise Unavailable(f"the code could not be sent: {exc}", retry_after=5) from None
        log.info("code sent to %s by %s (request %s)", bare, kind, request_id)
        return {"request_id": request_id, "api_jid": xmpp.bare_jid, "expires": iso(issued.expires)}

    def _connected_xmpp(self) -> XmppClient:
        if self.xmpp is None:
            raise Unavailable("login over XMPP is not configured on this service")
        if self.xmpp.state != "connected":
            raise Unavailable(f"the service's XMPP account is {self.xmpp.state}; try again later", retry_after=5)
        return self.xmpp

    async def use_code(self, jid_text: str | None, code_value: Any, address: str | None) -> str:
        """Check and consume a code (the 5th wrong attempt voids it); the bare JID it proves."""
        jid = self.user_jid(jid_text)
        if code_value is None:
            raise Invalid("code: required", fields={"code": "required"})
        code = parse_code(code_value)
        await self._limit(
            f"auth:addr:{address_key(address)}", self.auth.attempts_per_address_per_hour, "too many attempts from this address"
        )
        self.check_allowed(jid)
        bare = jid.bare
        verdict = await self.codes.check(bare, code)
        if verdict.outcome is Outcome.ACCEPTED:
            return bare
        log.info("code attempt for %s refused: %s", bare, verdict.outcome.value)
        if verdict.outcome is Outcome.VOID:
            raise RateLimited("too many wrong codes: request a new code", verdict.retry_after)
        if verdict.outcome is Outcome.WRONG:
            left = verdict.attempts_left
            raise Forbidden(f"wrong code ({left} attempt{'s' if left != 1 else ''} left)")
        if verdict.outcome is Outcome.EXPIRED:
            raise Forbidden("the code has expired: request a new code")
        raise Forbidden("no valid code for this JID: request a code first")

    async def login(
        self, jid_text: str | None, code_value: Any, device: str | None, client: str | None, address: str | None
    ) -> Login:
        jid = await self.use_code(jid_text, code_value, address)
        await self.users.ensure(jid)
        issued = await self.tokens.issue(jid, device, client)
        log.info("login: %s (token %s)", jid, issued.token_id)
        return Login(issued.token, issued.token_id, iso(issued.expires))

    # -- tokens ----------------------------------------------------------------------------
    async def list_tokens(self, owner: str, current: str) -> list[dict]:
        return [
            {
                "token_id": doc["_id"],
                "device": doc.get("device"),
                "client": doc.get("client"),
                "created_at": iso(doc.get("created_at")),
                "expires": iso(doc.get("expires")),
                "last_used_at": iso(doc.get("last_used_at")),
                "current": doc["_id"] == current,
            }
            for doc in await self.tokens.list(owner)
        ]

    async def revoke(self, owner: str, current: str, token_id: str | None, everything: bool) -> None:
        """Revoke one of the owner's tokens, or (`everything`) all but the current one."""
        if everything and token_id:
            raise Invalid("give token_id or all=true, not both", fields={"all": "not with token_id"})
        if everything:
            count = await self.tokens.revoke_all_but(owner, current)
            log.info("%s revoked %d other tokens", owner, count)
            return
        if not token_id:
            raise Invalid("token_id or all=true is required", fields={"token_id": "required unless all=true"})
        if not await self.tokens.revoke(owner, token_id):
            raise NotFound("no such token")
        log.info("%s revoked token %s", owner, token_id)

    # -- account ---------------------------------------------------------------------------
    async def delete_with_code(self, jid_text: str | None, code_value: Any, address: str | None) -> None:
        if jid_text is None and code_value is None:
            raise Invalid("a bearer token, or jid and code, is required", fields={"jid": "required", "code": "required"})
        await self.delete(await self.use_code(jid_text, code_value, address))

    async def delete(self, jid: str) -> None:
        """Remove the user, their tokens, codes, files and avatars (unreferenced blobs go too)."""
        await self.tokens.revoke_all(jid)
        removed = await self.file_manager.delete(jid, Criteria(), None)
        await self.users.delete(jid)  # from now on no upload can reserve quota for this JID
        removed += await self.file_manager.delete(jid, Criteria(), None)  # one that finished meanwhile
        await self.codes.delete(jid)
        log.info("account %s deleted (%d files)", jid, removed)

    # -- admin -----------------------------------------------------------------------------
    def require_admin(self, owner: str) -> None:
        if owner not in self.admins:
            raise Forbidden("admin only")

    async def set_quota(self, caller: str, jid_text: str | None, value: int | None) -> dict:
        self.require_admin(caller)
        jid = caller if jid_text is None else self.user_jid(jid_text).bare
        if value is None:
            raise Invalid("value: required", fields={"value": "required (bytes, an integer ≥ 0)"})
        quota = await self.users.set_quota(jid, value)
        if quota is None:
            raise NotFound("no such user")
        log.info("%s set the quota of %s to %d bytes", caller, jid, value)
        return render.quota(quota, jid=jid)

    async def quota(self, owner: str) -> dict:
        return render.quota(await self.users.quota(owner))

    async def list_accounts(self, caller: str, vhost: str | None, page: Page) -> dict:
        self.require_admin(caller)
        domain = None
        if vhost is not None:
            try:
                domain = jids.domain(vhost)
            except jids.BadJid as exc:
                raise Invalid(f"vhost: {exc}", fields={"vhost": str(exc)}) from None
        total, docs = await self.users.page(domain, page.number, page.per_page)
        counts = await asyncio.gather(*(self._file_counts(doc["_id"]) for doc in docs))
        items = []
        for doc, (files, avatars) in zip(docs, counts, strict=True):
            quota = self.users.quota_of(doc)
            items.append(
                {
                    "jid": doc["_id"],
                    **render.quota(quota, available=False),
                    "files": files,
                    "avatars": avatars,
                    "created_at": iso(doc.get("created_at")),
                    "last_login": iso(doc.get("last_login")),
                }
            )
        return render.listing(total, page, items)

    async def _file_counts(self, owner: str) -> tuple[int, int]:
        """(files, avatars) of one owner, counted from the files themselves."""
        counts = await self.files.scan_usage(owner, Criteria())
        return sum(b["count"] for name, b in counts.items() if name != "avatars"), counts["avatars"]["count"]

    async def verify_token(self, token: str) -> TokenInfo | None:
        """The live token behind a bearer credential; None when unknown, expired or revoked."""
        return await self.tokens.verify(token)
