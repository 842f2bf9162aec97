"""JIDs as the service sees them: validated and normalised by slixmpp (nodeprep, nameprep)."""

from __future__ import annotations

from slixmpp import JID
from slixmpp.jid import InvalidJID

MAX_LENGTH = 3071  # RFC 7622: three parts of at most 1023 bytes, plus separators


class BadJid(ValueError):
    """Not a JID this service accepts; the message says why, for the client."""


def parse(text: str, *, need_node: bool = True) -> JID:
    """The normalised JID in `text` (resource kept), or BadJid. A bare domain is not a user."""
    if not text or len(text) > MAX_LENGTH:
        raise BadJid("not a JID")
    try:
        jid = JID(text.strip())
    except InvalidJID as exc:
        raise BadJid(f"not a valid JID: {exc}") from None
    if not jid.domain:
        raise BadJid("not a JID")
    if need_node and not jid.node:
        raise BadJid("a user JID (name@domain) is required, not a bare domain")
    domain = jid.domain.rstrip(".")  # RFC 7622 §3.2: a trailing dot is not part of the domain
    if domain != jid.domain:
        if not domain:
            raise BadJid("not a JID")
        node = f"{jid.node}@" if jid.node else ""
        resource = f"/{jid.resource}" if jid.resource else ""
        jid = JID(f"{node}{domain}{resource}")
    return jid


def bare(text: str) -> str:
    """The normalised bare JID of a user, or BadJid."""
    return parse(text).bare


def domain(text: str) -> str:
    """A normalised domain (nameprep), or BadJid."""
    jid = parse(text, need_node=False)
    if jid.node or jid.resource:
        raise BadJid("a domain is expected, not a JID")
    return jid.domain


def entry(text: str) -> str:
    """A deny-list entry: a bare JID or a domain, normalised."""
    jid = parse(text, need_node=False)
    if jid.resource:
        raise BadJid("a bare JID or a domain is expected")
    return jid.bare
