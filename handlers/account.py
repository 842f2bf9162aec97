"""account/: the caller's quota (login, tokens and admin routes come with XMPP login)."""

from __future__ import annotations

from handlers.base import BaseHandler


class QuotaHandler(BaseHandler):
    auth = True

    async def get(self) -> None:
        quota = await self.ctx.users.quota(self.owner)
        self.reply({"quota": quota.quota, "used": quota.used, "available": quota.available})
