"""Who may use the service: `auth.deny` and `auth.allow_domains`, the one rule for every door
(REST logins, XEP-0363 slots, Prosody's http_file_share PUTs)."""

from __future__ import annotations

from settings import AuthSettings


def refusal(auth: AuthSettings, bare: str, domain: str) -> str | None:
    """Why this JID may not use the service, or None when it may."""
    if bare in auth.deny or domain in auth.deny:
        return "this JID is not allowed to use the service"
    if auth.allow_domains and domain not in auth.allow_domains:
        return f"accounts of {domain} are not allowed to use the service"
    return None
