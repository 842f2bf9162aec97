"""PUT /upload/<slot_id>/<name>: the HTTP side of an XEP-0363 slot.

The slot manager checks the request before its body (token, slot state, expiry, length, type)
and claims the slot; the file manager then admits the upload like any other, and the body streams
through the same pipeline as files/upload/ (`StreamedUpload`: hashed on the way into the store,
committed by the file manager: dedup, the atomic quota check, thumbnails before the answer,
durability before the 201). A PUT that does not finish (a disconnect, a timeout, a body longer or
shorter than the slot's size) spends its slot, drops its bytes and charges nothing.
"""

from __future__ import annotations

from handlers.files import StreamedUpload
from services.files import UploadMeta
from services.slots import Slot


class SlotUploadHandler(StreamedUpload):
    slot: Slot | None = None
    stored = False  # the file exists: the slot is used, not failed
    ended = False

    def log_line(self) -> str:
        args = getattr(self, "path_args", None)  # not set when the path did not decode (400)
        slot_id = args[0] if args else ""
        return f"SlotUpload slot={slot_id[:6]}…"

    def options(self, *args: str) -> None:
        """CORS preflight for web clients (no authentication)."""
        self.set_header("Access-Control-Allow-Methods", "OPTIONS, PUT")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "86400")
        self.no_content()

    async def admit(self) -> None:
        slot_id, name = self.path_args
        headers = self.request.headers
        length = self.content_length()
        slots = self.ctx.slots
        slot = await slots.claim(slot_id, name, headers.get("Authorization"), length, headers.get("Content-Type"))
        try:
            # the slot request already counted against the upload rate limit
            admission = await self.ctx.files.admit(slot.owner, length=length, declared=slot.size, count=False)
        except BaseException:
            await slots.unclaim(slot)  # refused before the body (busy, quota lowered): the slot stays
            raise
        self.slot = slot
        self.open_slot(admission, slot.size)

    def feed(self, chunk: bytes) -> None:
        self.feed_slot(chunk)

    async def put(self, slot_id: str, name: str) -> None:
        incoming = await self.received_slot_body()
        if incoming is None:
            return
        slot = self.slot
        assert slot is not None
        meta = UploadMeta(
            name=slot.name,
            declared_type=slot.content_type,
            context=slot.context,
            slot_id=slot.id,
            expires_before=slot.expires_before,
        )
        files = self.ctx.files
        doc = await files.store_upload(slot.owner, incoming, meta)
        self.stored = True
        await self.ctx.slots.finish(slot)
        self.reply(files.render(doc, await files.quota(slot.owner)), 201)

    def on_finish(self) -> None:
        super().on_finish()
        # a client gone after its whole body arrived: on_finish waits for put()'s answer (handlers/files.py)
        if self.slot is not None and not self.stored and not self.ended:
            self.ended = True
            self.ctx.slots.fail_soon(self.slot)
