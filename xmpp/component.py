"""The XEP-0363 upload service: an XEP-0114 external component on the server's asyncio loop.

`UploadComponent` is the service's XMPP client's sibling (it reuses its supervisor: connect,
keep-alive ping, reconnect with exponential backoff and jitter, `state` for /healthz, and
`send_code()`, so login codes can come from the component when no client account is set). It
answers:

- disco#info: identity `store/file`, feature `urn:xmpp:http:upload:0`, a feature per upload
  purpose offered, and the XEP-0128 form with `max-file-size` (bytes);
- slot requests (`<request xmlns='urn:xmpp:http:upload:0' filename size content-type>`, with an
  optional purpose child): the rules are the slot manager's; this module only speaks XMPP. A
  refusal echoes the request and carries the XEP's extras (`<file-too-large><max-file-size>`,
  `<retry stamp>`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP, Iq, Message, Presence
from slixmpp.plugins.xep_0363.stanza import Header

from services.render import iso
from services.slots import SlotRefused, SlotRequest
from xmpp.client import XmppClient

if TYPE_CHECKING:
    from services.slots import SlotManager
    from settings import ComponentSettings

log = logging.getLogger("gallery.component")

UPLOAD_NS = "urn:xmpp:http:upload:0"
PURPOSE_NS = "urn:xmpp:http:upload:purpose:0"
STANZA_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class UploadComponent(XmppClient):
    def __init__(self, settings: ComponentSettings, max_file_size: int, **timing: Any) -> None:
        super().__init__(settings, **timing)  # type: ignore[arg-type]  # the supervisor reads .jid only
        self.component = settings
        self.slot_manager: SlotManager | None = None  # serve() sets it, before start()
        self.max_file_size = max_file_size
        self.requests = 0  # slot requests answered (tests and logs)
        # the host the component is attached to: pinged to prove the stream is alive
        self.server_jid = JID(settings.allowed_domains()[0]) if settings.allowed_domains() else self.jid

    def serve(self, slots: SlotManager) -> None:
        """Answer slot requests with this slot manager's rules."""
        self.slot_manager = slots

    def _make_client(self) -> ComponentXMPP:  # type: ignore[override]
        assert self.slot_manager is not None, "serve() a slot manager first"
        s = self.component
        client = ComponentXMPP(s.jid, s.secret, s.host, s.port, plugin_config={"xep_0363": {"handle_upload_requests": True}})
        for plugin in ("xep_0030", "xep_0004", "xep_0128", "xep_0199", "xep_0070", "xep_0334", "xep_0363"):
            client.register_plugin(plugin)
        disco = client.plugin["xep_0030"]
        disco.add_identity(category="store", itype="file", name="HTTP File Upload")
        for purpose in self.slot_manager.purposes:
            disco.add_feature(f"{PURPOSE_NS}#{purpose}")
        form = client.plugin["xep_0004"].make_form(ftype="result")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=UPLOAD_NS)
        form.add_field(var="max-file-size", value=str(self.max_file_size))
        client.plugin["xep_0128"].add_extended_info(data=form)
        # ejabberd (check_from) drops a component's stanza without a from; Prosody fills it in
        client.add_filter("out", self._stamp_from)
        client.add_filter("out", self._on_outgoing)  # the supervisor's ping bookkeeping
        client.add_filter("in", self._on_incoming)
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("message_error", self._on_message_error)
        client.add_event_handler("http_upload_request", self._on_request)
        return client

    def _stamp_from(self, stanza: Any) -> Any:
        if isinstance(stanza, (Iq, Message, Presence)) and not stanza["from"]:
            stanza["from"] = self.jid
        return stanza

    def _target(self) -> tuple[str | None, int | None]:
        return self.component.host, self.component.port

    def _address(self) -> str:
        return f"{self.component.host}:{self.component.port} (component {self.component.jid})"

    def _ping_target(self) -> JID:
        """The host the component hangs off (its own domain would route back to itself). The
        server handles a component's stanzas in order, so the answer also proves it took
        everything sent before (the code barrier relies on it)."""
        return self.server_jid

    # -- slot requests ---------------------------------------------------------------------
    async def _on_request(self, iq: Iq) -> None:
        request = iq["http_upload_request"]
        xml = request.xml
        purposes = [child.tag.split("}", 1)[1] for child in xml if child.tag.startswith(f"{{{PURPOSE_NS}}}")]
        ephemeral = xml.find(f"{{{PURPOSE_NS}}}ephemeral")
        wanted = SlotRequest(
            requester=str(iq["from"]),
            filename=xml.get("filename"),
            size=xml.get("size"),
            content_type=xml.get("content-type"),
            purposes=purposes,
            expire_before=None if ephemeral is None else ephemeral.get("expire-before"),
        )
        assert self.slot_manager is not None
        try:
            issued = await self.slot_manager.issue(wanted)
        except SlotRefused as refused:
            log.info("slot refused for %s: %s", iq["from"].bare, refused.text)
            self._refuse(iq, refused)
            return
        except Exception:
            log.exception("slot request from %s failed", iq["from"].bare)
            self._refuse(iq, SlotRefused("wait", "internal-server-error", "the upload service failed; try again later"))
            return
        self.requests += 1
        reply = iq.reply()
        slot = reply["http_upload_slot"]
        slot["put"]["url"] = issued.put_url
        for name, value in issued.headers:
            header = Header()
            header["name"] = name
            header["value"] = value
            slot["put"].append(header)
        slot["get"]["url"] = issued.get_url
        reply.send()

    def _refuse(self, iq: Iq, refused: SlotRefused) -> None:
        reply = iq.reply(clear=False)  # the request is echoed
        reply["type"] = "error"
        reply["error"]["type"] = refused.kind
        reply["error"]["condition"] = refused.condition
        reply["error"]["text"] = refused.text
        error = reply["error"].xml
        if refused.max_file_size is not None:
            too_large = ET.SubElement(error, f"{{{UPLOAD_NS}}}file-too-large")
            ET.SubElement(too_large, f"{{{UPLOAD_NS}}}max-file-size").text = str(refused.max_file_size)
        if refused.retry is not None:
            stamp = iso(refused.retry.replace(microsecond=0)).replace(".000Z", "Z")  # type: ignore[union-attr]
            ET.SubElement(error, f"{{{UPLOAD_NS}}}retry", {"stamp": stamp})
        reply.send()
