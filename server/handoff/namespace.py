"""The Socket.IO namespace ``/handoff``: one class, one thin ``on_<event>`` handler per protocol event.

Each handler validates its payload (handoff.payloads), calls a service (handoff.services) through the delivery
(which sends what the service returns) and returns the acknowledgement. :meth:`HandoffNamespace.trigger_event` wraps
them all: the connection's rate limit, unknown events, and turning errors into ``{"ok": false, "error": {...}}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import socketio

from copilot.live.protocol import (
    CLIENT_EVENTS,
    ERR_INTERNAL,
    ERR_INVALID_PAYLOAD,
    ERR_RATE_LIMITED,
    ERR_UNAUTHORIZED,
    NAMESPACE,
    ROLE_AGENT,
    ROLE_BOT,
)
from handoff import payloads
from handoff.auth import Principal, principal_for
from handoff.delivery import Delivery, agent_room, bot_agents_room, bot_room
from handoff.errors import HandoffError
from handoff.metrics import HandoffMetrics
from handoff.ratelimit import TokenBucket
from handoff.services import Services
from handoff.settings import Settings
from handoff.store import Store

log = logging.getLogger(__name__)
Ack = dict[str, Any]


def error_ack(error: HandoffError) -> Ack:
    return {"ok": False, "error": error.as_error()}


class HandoffNamespace(socketio.AsyncNamespace):
    """Protocol v1 over Socket.IO (docs/protocol.md)."""

    def __init__(self, *, store: Store, services: Services, delivery: Delivery, settings: Settings,
                 clock: Callable[[], float] = time.monotonic, metrics: HandoffMetrics | None = None) -> None:
        super().__init__(NAMESPACE)
        self.metrics = metrics if metrics is not None else services.metrics
        self.store = store
        self.conversations = services.conversations
        self.inbox = services.inbox
        self.tool_events = services.tool_events
        self.typing = services.typing
        self.sidebar = services.sidebar
        self.delivery = delivery
        self.settings = settings
        self.clock = clock
        self.principals: dict[str, Principal] = {}
        self.buckets: dict[str, TokenBucket] = {}

    # -- connection ---------------------------------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Accept a known token; refuse anything else with the reason. Join the principal's standing rooms."""
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            who = await principal_for(self.store, token)
        except HandoffError as exc:
            raise socketio.exceptions.ConnectionRefusedError(f"{exc.code}: {exc.message}", exc.as_error()) from None
        self.principals[sid] = who
        self.metrics.sockets.labels(who.role).inc()
        if who.role == ROLE_BOT:
            rate, burst = self.settings.bot_rate_limit_per_s, self.settings.bot_rate_limit_burst
        else:
            rate, burst = self.settings.rate_limit_per_s, self.settings.rate_limit_burst
        self.buckets[sid] = TokenBucket(rate, burst, self.clock())
        if who.role == ROLE_AGENT:
            await self.enter_room(sid, agent_room(who.id))
            for bot_id in who.bots:
                await self.enter_room(sid, bot_agents_room(bot_id))
        elif who.role == ROLE_BOT:
            await self.enter_room(sid, bot_room(who.id))
        # A customer is not subscribed to its conversation here: like everyone, by join, resume or an accepted
        # event, so that a reconnecting client's resume is exact (nothing both in its ack and broadcast).

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        who = self.principals.pop(sid, None)
        if who is not None:
            self.metrics.sockets.labels(who.role).dec()
        self.buckets.pop(sid, None)
        self.delivery.forget(sid)
        for broadcast in self.typing.disconnected(sid):
            await self.delivery.emit(broadcast)

    # -- dispatch -------------------------------------------------------------------------------------------
    async def trigger_event(self, event: str, *args: Any) -> Any:
        sid = args[0]
        # The transport's own connect and disconnect run while python-socketio holds the socket as connecting or
        # disconnecting; a client that sends an event of that name is connected, and gets the unknown-event refusal.
        if event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, NAMESPACE):
            return await super().trigger_event(event, *args)
        try:
            if event not in CLIENT_EVENTS:
                raise HandoffError(ERR_INVALID_PAYLOAD, f"unknown event {str(event)[:80]!r}; the events are "
                                                        + ", ".join(CLIENT_EVENTS))
            who = self.principals.get(sid)
            if who is None:
                raise HandoffError(ERR_UNAUTHORIZED, "this connection is not authenticated")
            wait = self.buckets[sid].take(self.clock())
            if wait > 0:
                raise HandoffError(ERR_RATE_LIMITED, "too many events on this connection; slow down",
                                   retry_after_ms=max(1, int(wait * 1000)))
            if len(args) != 2:
                raise HandoffError(ERR_INVALID_PAYLOAD, f"{event}: send exactly one payload object")
            ack: Ack = await getattr(self, f"on_{event}")(sid, who, args[1])
            return {"ok": True, **ack}
        except HandoffError as exc:
            return error_ack(exc)
        except Exception:
            log.exception("event %s from %s failed", event, sid)
            return error_ack(HandoffError(ERR_INTERNAL, "the server failed to handle this event; retry"))

    # -- protocol events --------------------------------------------------------------------------------------
    async def on_join(self, sid: str, who: Principal, data: Any) -> Ack:
        ref = payloads.conversation_ref(data, "join")
        return (await self.delivery.run(ref.conversation_id, sid, lambda: self.inbox.join(who, ref))).ack

    async def on_message(self, sid: str, who: Principal, data: Any) -> Ack:
        msg = payloads.message(data)
        return (await self.delivery.run(msg.conversation_id, sid, lambda: self.conversations.message(who, msg))).ack

    async def on_typing(self, sid: str, who: Principal, data: Any) -> Ack:
        typing = payloads.typing(data)
        return (await self.delivery.run(typing.conversation_id, sid,
                                        lambda: self.typing.typing(who, typing, sid))).ack

    async def on_escalate(self, sid: str, who: Principal, data: Any) -> Ack:
        esc = payloads.escalate(data)
        return (await self.delivery.run(esc.conversation_id, sid, lambda: self.conversations.escalate(who, esc))).ack

    async def on_claim(self, sid: str, who: Principal, data: Any) -> Ack:
        ref = payloads.conversation_ref(data, "claim")
        return (await self.delivery.run(ref.conversation_id, sid, lambda: self.conversations.claim(who, ref))).ack

    async def on_hand_back(self, sid: str, who: Principal, data: Any) -> Ack:
        hb = payloads.hand_back(data)
        return (await self.delivery.run(hb.conversation_id, sid, lambda: self.conversations.hand_back(who, hb))).ack

    async def on_resolve(self, sid: str, who: Principal, data: Any) -> Ack:
        ref = payloads.conversation_ref(data, "resolve")
        return (await self.delivery.run(ref.conversation_id, sid, lambda: self.conversations.resolve(who, ref))).ack

    async def on_suggestion_feedback(self, sid: str, who: Principal, data: Any) -> Ack:
        fb = payloads.feedback(data)
        return (await self.delivery.run(fb.conversation_id, sid, lambda: self.sidebar.feedback(who, fb))).ack

    async def on_tool_event(self, sid: str, who: Principal, data: Any) -> Ack:
        tool = payloads.tool_event(data)
        return (await self.delivery.run(tool.conversation_id, sid, lambda: self.tool_events.post(who, tool))).ack

    async def on_resume(self, sid: str, who: Principal, data: Any) -> Ack:
        res = payloads.resume(data)
        return (await self.delivery.run(res.conversation_id, sid, lambda: self.inbox.resume(who, res))).ack
