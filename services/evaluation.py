"""A first look without an XMPP server: the evaluation account and what the page shows about itself.

When no XMPP account (`xmpp.jid`) and no XMPP component (`xmpp.component.jid`) is configured and
the service listens on loopback only, nobody could ever log in. Then one account,
`demo@gallery.invalid` (a domain that cannot exist), gets its login codes on the service's
console instead of over XMPP: at start-up, and again whenever the page asks for one. The codes are
ordinary codes (same store, lifetime, attempt limits, rate limits) used through the ordinary
`account/xmpp_auth/` route. It is never on when XMPP is configured or the service is reachable from
elsewhere than this machine.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from services.errors import ServiceError
from xmpp import jids

if TYPE_CHECKING:
    from slixmpp import JID

    from services.accounts import AccountManager
    from settings import Settings

log = logging.getLogger("gallery.evaluation")

EVALUATION_JID = "demo@gallery.invalid"
CONSOLE_JID = "gallery.invalid"  # the "sender" the code request answers with: nobody on XMPP
DEFAULT_TITLE = "gallery"


def component_jid(settings: Settings) -> str:
    """`xmpp.component.jid` where the settings have it (the XEP-0363 component), else ''."""
    component = getattr(settings.xmpp, "component", None)
    return str(getattr(component, "jid", "") or "")


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface), 0.0.0.0, a name: reachable from elsewhere


def enabled(settings: Settings) -> bool:
    """No XMPP configured at all, and listening on loopback only."""
    return not settings.xmpp.jid and not component_jid(settings) and is_loopback(settings.server.host)


class ConsoleCodes:
    """Delivers the evaluation account's codes to the console (the log) instead of over XMPP.
    It stands where the XMPP client stands for the account manager, for that one JID only."""

    state = "connected"
    bare_jid = CONSOLE_JID
    jid = EVALUATION_JID

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    async def send_code(self, to: JID, code: str, url: str, kind: str = "message", **_: Any) -> None:
        log.warning(
            "EVALUATION SET-UP (no XMPP configured, listening on loopback only): open %s/ and sign in as %s "
            "with the code %s (valid for a few minutes, single use; the page can ask for a new one)",
            self.public_url,
            to.bare,
            code,
        )


async def start(accounts: AccountManager) -> None:
    """Let the account manager send the evaluation account's codes to the console, and print one."""
    console = ConsoleCodes(accounts.settings.public_url)
    accounts.console = console
    await accounts.codes.delete(EVALUATION_JID)  # a restart does not wait for the code interval
    try:
        await accounts.request_code(EVALUATION_JID, "message", "console")
    except ServiceError as exc:  # e.g. auth.allow_domains or auth.deny leave the account out
        log.warning("evaluation set-up: no code for %s: %s", EVALUATION_JID, exc.message)


def about(settings: Settings) -> dict[str, Any]:
    """What the web page shows about this service (GET /api/v1/about/)."""
    api_jid = None
    if settings.xmpp.jid:
        api_jid = jids.parse(settings.xmpp.jid).bare
    elif component_jid(settings):
        api_jid = component_jid(settings)
    evaluation = enabled(settings)
    web = settings.web
    logo = None
    if web.logo:
        logo = web.logo if urlsplit(web.logo).scheme == "https" else "/web/logo"
    return {
        "title": web.title or DEFAULT_TITLE,
        "logo": logo,
        "code_hint": web.code_hint or None,
        "api_jid": api_jid,
        "evaluation": evaluation,
        "evaluation_jid": EVALUATION_JID if evaluation else None,
        "max_file_size": settings.limits.max_file_size,
    }
