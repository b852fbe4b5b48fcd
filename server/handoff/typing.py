"""Typing indicators: throttled, expiring by themselves, never stored.

:class:`TypingTracker` is pure bookkeeping with the time passed in, so the rules are testable without sleeping.
:class:`TypingService` asks it whether an indicator should be forwarded, and a background loop asks it which
``start``s have gone stale (their sender crashed or lost the network before sending ``stop``); those get a ``stop``
on the sender's behalf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from copilot.live.protocol import ERR_FORBIDDEN, EV_TYPING, ROLE_AGENT, ROLE_CUSTOMER, TYPING_START, TYPING_STOP
from handoff import payloads as p
from handoff.auth import Principal
from handoff.clock import Clock
from handoff.errors import HandoffError
from handoff.outcomes import Audience, Broadcast, Outcome, Subscribed, holder_sockets
from handoff.rules import check_holder, check_party, load
from handoff.store import Store

TypingKey = tuple[str, str, str]  # (conversation_id, role, sender)


@dataclass
class _Active:
    forwarded_at: float
    expires_at: float
    holder: str  # the socket that sent the start (so a disconnect can stop it)
    target: Any  # to whom the indicator went (so the expiry's stop goes to the same people)


class TypingTracker:
    """Which senders are typing where, and what to forward.

    Args:
        timeout_s: a ``start`` with no ``stop`` or fresh ``start`` within this time expires.
        throttle_s: repeated ``start``s are forwarded at most once per this interval.
    """

    def __init__(self, timeout_s: float, throttle_s: float) -> None:
        self.timeout_s = timeout_s
        self.throttle_s = throttle_s
        self._active: dict[TypingKey, _Active] = {}

    def update(self, key: TypingKey, state: str, now: float, holder: str, target: Any = None) -> bool:
        """Record ``state`` from ``key``'s sender; True when it should be forwarded to the other parties."""
        active = self._active.get(key)
        if state == TYPING_START:
            if active is not None and now - active.forwarded_at < self.throttle_s:
                active.expires_at = now + self.timeout_s
                active.holder = holder
                active.target = target
                return False
            self._active[key] = _Active(now, now + self.timeout_s, holder, target)
            return True
        if state == TYPING_STOP:
            # A stop without a forwarded start tells nobody anything new.
            return self._active.pop(key, None) is not None
        raise ValueError(f"unknown typing state {state!r}")

    def clear(self, key: TypingKey) -> list[tuple[TypingKey, Any]]:
        """Forget ``key`` (its sender just wrote); returns it with its target if a start had been forwarded."""
        active = self._active.pop(key, None)
        return [] if active is None else [(key, active.target)]

    def expire(self, now: float) -> list[tuple[TypingKey, Any]]:
        """Remove and return every indicator past its expiry, with its target."""
        stale = [key for key, active in self._active.items() if active.expires_at <= now]
        return [(key, self._active.pop(key).target) for key in stale]

    def drop_holder(self, holder: str) -> list[tuple[TypingKey, Any]]:
        """Remove and return the indicators started by one socket (it disconnected), with their targets."""
        gone = [key for key, active in self._active.items() if active.holder == holder]
        return [(key, self._active.pop(key).target) for key in gone]

    def __len__(self) -> int:
        return len(self._active)


class TypingService:
    """Typing indicators between a conversation's customer and its holding agent.

    Args:
        store: the database (to check who may type where).
        tracker: the bookkeeping.
        clock: its monotonic time is the tracker's.
    """

    def __init__(self, store: Store, tracker: TypingTracker, clock: Clock) -> None:
        self.store = store
        self.tracker = tracker
        self.clock = clock

    async def typing(self, who: Principal, data: p.TypingIn, holder: str) -> Outcome:
        """Forward a typing indicator to the other side (throttled); ``holder`` is the sending socket."""
        if who.role not in (ROLE_CUSTOMER, ROLE_AGENT):
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} does not send typing indicators")
        async with self.store.read() as tx:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            if who.role == ROLE_AGENT:
                await check_holder(tx, who, conv, "type in")
        target: tuple[Audience, ...]
        if who.role == ROLE_AGENT:
            # Only the customer side: never the agent's own other devices or readers on the agent side.
            target = (Subscribed(conv.conversation_id, frozenset({ROLE_CUSTOMER})),)
        else:
            target = (Subscribed(conv.conversation_id, frozenset({ROLE_AGENT})),
                      *holder_sockets(conv.agent_id, conv.status))
        out = Outcome(subscribe=(conv.conversation_id, who.role))
        key = (conv.conversation_id, who.role, who.id)
        if self.tracker.update(key, data.state, self.clock.monotonic(), holder, target):
            payload = {"conversation_id": conv.conversation_id, "role": who.role, "state": data.state}
            out.broadcasts.append(Broadcast(EV_TYPING, payload, target))
        return out

    def done(self, conversation_id: str, who: Principal) -> list[Broadcast]:
        """A sender who just wrote (or left) is no longer typing: tell the others if they were told it was."""
        return [_stop(key, target) for key, target in self.tracker.clear((conversation_id, who.role, who.id))]

    def expired(self) -> list[Broadcast]:
        """``stop`` for every indicator whose sender went quiet too long (called by a background loop)."""
        return [_stop(key, target) for key, target in self.tracker.expire(self.clock.monotonic())]

    def disconnected(self, holder: str) -> list[Broadcast]:
        """``stop`` for the indicators a socket had started, now that it is gone."""
        return [_stop(key, target) for key, target in self.tracker.drop_holder(holder)]


def _stop(key: TypingKey, target: Any) -> Broadcast:
    payload = {"conversation_id": key[0], "role": key[1], "state": TYPING_STOP}
    return Broadcast(EV_TYPING, payload, target, skip_sender=False)
