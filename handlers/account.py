"""account/: login over XMPP, tokens, the account itself, quota, and the admin list."""

from __future__ import annotations

from handlers.base import BaseHandler
from services.accounts import MAX_QUOTA, AccountManager
from xmpp.jids import MAX_LENGTH as JID_LENGTH

NAME_LENGTH = 255


class AccountHandler(BaseHandler):
    @property
    def accounts(self) -> AccountManager:
        return self.ctx.accounts

    @property
    def address(self) -> str:
        return self.request.remote_ip or ""

    def jid_param(self, name: str = "jid") -> str | None:
        return self.params.str(name, JID_LENGTH)


class CodeRequestHandler(AccountHandler):
    """POST account/xmpp_code_request/: send a one-time code to a JID over XMPP."""

    async def post(self) -> None:
        body = await self.accounts.request_code(self.jid_param(), self.params.str("type", 16), self.address)
        self.reply(body, 201)


class AuthHandler(AccountHandler):
    """POST account/xmpp_auth/: exchange the code for a bearer token."""

    async def post(self) -> None:
        login = await self.accounts.login(
            self.jid_param(),
            self.params.raw("code"),
            self.params.str("device", NAME_LENGTH),
            self.params.str("client", NAME_LENGTH),
            self.address,
        )
        self.reply({"token": login.token, "token_id": login.token_id, "expires": login.expires}, 201)


class TokensHandler(AccountHandler):
    """GET, DELETE account/tokens/: the caller's tokens."""

    auth = True

    async def get(self) -> None:
        assert self.token is not None
        self.reply(await self.accounts.list_tokens(self.owner, self.token.token_id))

    async def delete(self) -> None:
        assert self.token is not None
        token_id = self.params.str("token_id", NAME_LENGTH)
        await self.accounts.revoke(self.owner, self.token.token_id, token_id, self.params.bool("all", False))
        self.no_content()


class AccountDeleteHandler(AccountHandler):
    """DELETE account/: by bearer token, or by jid + code."""

    async def delete(self) -> None:
        if self.request.headers.get("Authorization") is not None:
            await self.authenticate()
            await self.accounts.delete(self.owner)
        else:
            await self.accounts.delete_with_code(self.jid_param(), self.params.raw("code"), self.address)
        self.no_content()


class QuotaHandler(AccountHandler):
    """GET account/quota/ (the caller's), PUT (admin: any user's)."""

    auth = True

    async def get(self) -> None:
        self.reply(await self.accounts.quota(self.owner))

    async def put(self) -> None:
        self.accounts.require_admin(self.owner)
        value = self.params.int("value", 0, MAX_QUOTA)
        self.reply(await self.accounts.set_quota(self.owner, self.jid_param(), value))


class AccountListHandler(AccountHandler):
    """GET account/list/ (admin): every account, or one vhost's, paginated."""

    auth = True

    async def get(self) -> None:
        self.accounts.require_admin(self.owner)
        page = self.params.page(sortable=False)
        self.reply(await self.accounts.list_accounts(self.owner, self.params.str("vhost", JID_LENGTH), page))
