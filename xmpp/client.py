"""The service's own XMPP account: one slixmpp client on the server's asyncio loop.

`XmppClient.start()` launches a supervisor task that connects, keeps the session alive (a ping to
the server every `ping_interval` seconds) and reconnects with exponential backoff and jitter
whenever the session ends. `state` is what /healthz shows: "connecting", "connected" (a session is
open) or "disconnected" (waiting to retry), and "stopped" after `stop()`.

`send_code()` really attempts delivery and reports failure: it refuses when there is no session,
sends the stanza, then sends a ping to our own server and waits for its answer. A c2s stream is
processed in order, so that answer proves the server took the code stanza; an error bounce for it
that arrives before the answer (for example: no such user) counts as a failed delivery. It never
waits for the user's client to answer a confirm IQ (some clients never do).

When is a ping "unanswered"? Not after a fixed time on our own clock from the moment it was
queued: the service shares its event loop with everything else in the process, and a busy process
(or machine) can leave a stanza in our own send queue, or our loop asleep, for longer than any
sensible timeout while the server answers at once; the timer then fires before the answer that is
already on its way can be read. The ping counts as unanswered only when the server has been silent
for `send_timeout` seconds after the ping really left (stamped by an outgoing filter), counted only
while this process runs (see `_server_answers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slixmpp import JID, ClientXMPP, Iq, Message
from slixmpp.exceptions import IqError, IqTimeout

if TYPE_CHECKING:
    from settings import XmppSettings

log = logging.getLogger("gallery.xmpp")

HTTP_AUTH_NS = "http://jabber.org/protocol/http-auth"
PLUGINS = ("xep_0030", "xep_0070", "xep_0199", "xep_0334")


# slixmpp's own IQ timer, for the barrier ping: far away, since silence is judged here instead
PING_HOLD = 3600.0
SLICE = 0.1  # seconds: silence is counted in slices this long
STALL = 0.2  # beyond SLICE + STALL a slice was a stall of this process: the rest is not counted


class XmppUnavailable(Exception):
    """No session with the XMPP server, or the code could not be handed to it."""


class XmppClient:
    def __init__(
        self,
        settings: XmppSettings,
        *,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        connect_timeout: float = 30.0,
        send_timeout: float = 10.0,
        ping_interval: float = 60.0,
    ) -> None:
        self.settings = settings
        self.jid = JID(settings.jid)
        # slixmpp logs every stanza at DEBUG, codes and the SASL exchange included: never let it.
        wire = logging.getLogger("slixmpp.xmlstream.xmlstream")
        if wire.getEffectiveLevel() < logging.INFO:
            wire.setLevel(logging.INFO)
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.ping_interval = ping_interval
        self.state = "disconnected"  # connecting, connected, disconnected, stopped
        self._first_attempt = asyncio.Event()
        self.sessions = 0  # sessions opened so far (tests and logs use it)
        self._client: ClientXMPP | None = None
        self._task: asyncio.Task | None = None
        self._attempt: asyncio.Future[str] | None = None  # the outcome of one connection attempt
        self._lost: asyncio.Future[None] | None = None  # resolved when the open session ends
        self._bounces: dict[str, asyncio.Future[str]] = {}  # message id -> error condition
        self._sent_at: dict[str, float | None] = {}  # barrier ping id -> loop time it left (None: queued)
        self._heard = 0.0  # loop time of the last stanza received from the server
        self._background: set[asyncio.Task] = set()
        self._stopping = False

    @property
    def bare_jid(self) -> str:
        return self.jid.bare

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, wait: float = 10.0) -> None:
        """Start connecting; wait for the first attempt to end, at most `wait` seconds. Never
        fails: the service runs without XMPP, and code requests answer 503 until a session is up."""
        self._stopping = False
        self._client = self._make_client()
        self._first_attempt.clear()
        self._task = asyncio.create_task(self._supervise(), name="xmpp-supervisor")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._first_attempt.wait()
        if self.state != "connected":
            log.warning("XMPP: no session with the server yet (%s); retrying in the background", self._address())

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            client.cancel_connection_attempt()
            if client.is_connected():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(wait=2, reason="service stopping"), 3)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._background):
            task.cancel()
        if client is not None:
            for name in list(client.scheduled_events):  # IQ timeouts and the like
                client.cancel_schedule(name)
            # slixmpp's outgoing-stanza loop is not stopped by disconnect(); end it with the client.
            send_loop = getattr(client, "_run_out_filters", None)
            if send_loop is not None:
                send_loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await send_loop
        self._client = None
        self.state = "stopped"

    def _make_client(self) -> ClientXMPP:
        s = self.settings
        mechanisms: dict[str, Any] = {}
        if not s.require_tls:
            mechanisms = {"unencrypted_plain": True, "unencrypted_scram": True}
        context = ssl.create_default_context()
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = ClientXMPP(s.jid, s.password, plugin_config={"feature_mechanisms": mechanisms}, ssl_context=context)
        # Direct TLS first only when TLS is required; STARTTLS whenever the server offers it; a
        # plain stream only when TLS is not required (and then SASL is allowed over it).
        client.enable_direct_tls = s.require_tls
        client.enable_starttls = True
        client.enable_plaintext = not s.require_tls
        for plugin in PLUGINS:
            client.register_plugin(plugin)
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("failed_all_auth", self._on_auth_failed)
        client.add_event_handler("message_error", self._on_message_error)
        client.add_filter("out", self._on_outgoing)
        client.add_filter("in", self._on_incoming)
        return client

    def _address(self) -> str:
        host, port = self._target()
        return f"{self.jid.domain} (DNS SRV)" if host is None else f"{host}:{port}"

    def _target(self) -> tuple[str | None, int | None]:
        s = self.settings
        if s.host:
            return s.host, s.port or 5222
        if s.port:
            return self.jid.domain, s.port
        return None, None  # DNS SRV of the JID's domain

    # -- slixmpp events --------------------------------------------------------------------
    def _on_session_start(self, _event: Any) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result("session")

    def _on_auth_failed(self, _event: Any) -> None:
        client = self._client
        transport = client.transport if client is not None else None
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        if self.settings.require_tls and not encrypted:
            reason = "the server offers no TLS and xmpp.require_tls is true: the password was not sent"
        else:
            reason = "authentication failed: check xmpp.jid and xmpp.password"
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(reason)

    def _on_disconnected(self, reason: Any) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(f"disconnected ({reason or 'no reason given'})")
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self.state == "connected":
            self.state = "disconnected"

    def _on_outgoing(self, stanza: Any) -> Any:
        """Called by slixmpp's send loop right before the stanza is written to the socket."""
        if isinstance(stanza, Iq) and stanza["id"] in self._sent_at:
            self._sent_at[stanza["id"]] = asyncio.get_running_loop().time()
        return stanza

    def _on_incoming(self, stanza: Any) -> Any:
        self._heard = asyncio.get_running_loop().time()
        return stanza

    def _on_message_error(self, msg: Message) -> None:
        waiter = self._bounces.get(msg["id"])
        if waiter is not None and not waiter.done():
            waiter.set_result(msg["error"]["condition"] or "error")

    # -- the supervisor --------------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = self.backoff_min
        while not self._stopping:
            self.state = "connecting"
            try:
                outcome = await self._connect_once()
            except Exception:
                log.exception("XMPP: connection attempt failed")
                outcome = "error"
            if outcome == "session":
                self.state = "connected"
                self._first_attempt.set()
                self.sessions += 1
                log.info("XMPP: session open as %s via %s", self._client.boundjid if self._client else "?", self._address())
                delay = self.backoff_min
                await self._keep_alive()
                if not self._stopping:
                    log.warning("XMPP: session with %s lost", self._address())
            elif not self._stopping:
                log.warning("XMPP: cannot connect to %s: %s; retrying in %.0f s", self._address(), outcome, delay)
            self.state = "disconnected"
            self._first_attempt.set()
            if self._stopping:
                break
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.backoff_max)

    async def _connect_once(self) -> str:
        """One connection attempt: "session" on success, else why it failed."""
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        self._attempt = attempt = loop.create_future()
        self._lost = loop.create_future()
        host, port = self._target()
        connecting = client.connect(host, port)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.wait({connecting, attempt}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done() and not client.is_connected():
                    # slixmpp reschedules failed attempts itself, with its own backoff: ours decides
                    client.cancel_connection_attempt()
                    return "no connection"
                return await attempt
        except TimeoutError:
            client.cancel_connection_attempt()
            client.abort()
            return "timed out"
        finally:
            self._attempt = None

    async def _keep_alive(self) -> None:
        """Return when the session ends; a ping the server leaves unanswered ends it."""
        lost = self._lost
        client = self._client
        assert lost is not None and client is not None
        while not lost.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), self.ping_interval)
                return
            if not await self._server_answers(lost):
                log.warning("XMPP: the server did not answer a ping; reconnecting")
                client.abort()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), 5)
                return

    def _ping_target(self) -> JID:
        """Whom the keep-alive and delivery pings go to: our own server."""
        assert self._client is not None
        return JID(self._client.boundjid.domain)

    async def _server_answers(self, lost: asyncio.Future[None]) -> bool:
        """A ping to our own server: True once it answers (an error answer counts); False when the
        session ends, or the server stays silent for `send_timeout` seconds after the ping left.

        Silence is counted in short slices, and only while this process really runs: of a slice
        that took much longer than asked (the loop was blocked, the process or the whole machine
        was not scheduled) only SLICE + STALL counts, and the next slice reads the socket first.
        Time the ping spends in our own send queue is not silence either. Any stanza from the
        server resets it."""
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        iq = client.make_iq_get(ito=self._ping_target())
        iq.enable("ping")
        key = iq["id"]
        self._sent_at[key] = None
        ping = iq.send(timeout=PING_HOLD)
        silent = waited = 0.0  # counted seconds: without a word from the server, and in all
        heard = self._heard
        try:
            while True:
                began = loop.time()
                await asyncio.wait({ping, lost}, timeout=SLICE, return_when=asyncio.FIRST_COMPLETED)
                if ping.done():
                    if ping.cancelled():
                        return False
                    error = ping.exception()
                    return error is None or isinstance(error, IqError)
                if lost.done():
                    return False
                took = loop.time() - began
                counted = min(took, SLICE + STALL)  # a stalled slice counts no more than a normal one
                waited += counted
                if self._sent_at.get(key) is not None:  # it left: the server's turn
                    silent = 0.0 if self._heard != heard else silent + counted
                heard = self._heard
                if silent >= self.send_timeout or waited >= 3 * self.send_timeout:
                    return False
        finally:
            self._sent_at.pop(key, None)
            if not ping.done():
                ping.cancel()
                client.remove_handler(f"IqCallback_{key}")
                client.cancel_schedule(f"IqTimeout_{key}")

    # -- delivery --------------------------------------------------------------------------
    async def send_code(
        self,
        to: JID,
        code: str,
        url: str,
        kind: str = "message",
        on_denied: Callable[[], Awaitable[None]] | None = None,
        answer_within: float = 300,
        stanza_id: str | None = None,
    ) -> None:
        """Deliver `code` to `to`: a chat message, or (`kind="iq"`) an IQ get; both carry the
        XEP-0070 <confirm/>, and `stanza_id` (the request id) when given: a client matches the
        confirm IQ to its HTTP request by it. Returns once our server has taken the stanza, without
        waiting for the user's client; XmppUnavailable otherwise. For an IQ, `on_denied` runs if
        the user's client answers <not-authorized/> within `answer_within` seconds (the code's
        lifetime)."""
        client = self._client
        lost = self._lost
        if client is None or lost is None or lost.done() or self.state != "connected":
            raise XmppUnavailable("the service's XMPP account is not connected")
        if kind == "iq":
            iq = client.make_iq_get(ito=to)
            if stanza_id:
                iq["id"] = stanza_id
            self._confirm(iq, code, url)
            reply = iq.send(timeout=max(self.send_timeout, answer_within))
            reply.add_done_callback(lambda f: self._on_iq_reply(f, to, on_denied))
            await self._barrier(lost, refused=reply)
            return
        msg = client.make_message(mto=to, mbody=f"Verification code is {code}", mtype="chat")
        msg["id"] = stanza_id or uuid.uuid4().hex
        self._confirm(msg, code, url)
        msg.enable("no-store")
        bounce: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._bounces[msg["id"]] = bounce
        try:
            msg.send()
            await self._barrier(lost, refused=bounce)
        finally:
            del self._bounces[msg["id"]]
            bounce.cancel()

    @staticmethod
    def _confirm(stanza: Message | Iq, code: str, url: str) -> None:
        stanza["confirm"]["id"] = code
        stanza["confirm"]["method"] = "POST"
        stanza["confirm"]["url"] = url

    async def _barrier(self, lost: asyncio.Future[None], refused: asyncio.Future[Any]) -> None:
        """Wait until the server has processed what was sent before; fail on a bounce for it."""
        if not await self._server_answers(lost):
            raise XmppUnavailable("the XMPP server did not take the message")
        if not refused.done() or refused.cancelled():
            return
        error = refused.exception()
        if isinstance(error, IqError):
            condition = error.iq["error"]["condition"]
            if condition != "not-authorized":  # that one is an answer: delivered, and refused by the user
                raise XmppUnavailable(f"the XMPP server refused delivery ({condition})")
        elif error is None and isinstance(refused.result(), str):
            raise XmppUnavailable(f"the XMPP server refused delivery ({refused.result()})")

    def _on_iq_reply(self, reply: asyncio.Future[Any], to: JID, on_denied: Callable[[], Awaitable[None]] | None) -> None:
        if reply.cancelled():
            return
        error = reply.exception()
        if error is None:
            log.info("XMPP: %s confirmed the request", to.bare)
        elif isinstance(error, IqTimeout):
            log.info("XMPP: %s did not answer the confirm request", to.bare)
        elif isinstance(error, IqError):
            condition = error.iq["error"]["condition"]
            log.info("XMPP: %s answered the confirm request with %s", to.bare, condition)
            if condition == "not-authorized" and on_denied is not None:
                task = asyncio.ensure_future(on_denied())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
