"""Typing indicators (B5): throttled, expiring by themselves, never stored.

Pure bookkeeping with the clock passed in, so the rules are testable without sleeping. The service asks
:meth:`TypingTracker.update` whether an indicator should be forwarded, and a background loop asks
:meth:`TypingTracker.expire` which ``start``s have gone stale (their sender crashed or lost the network before
sending ``stop``); those get a ``stop`` on the sender's behalf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from copilot.live.protocol import TYPING_START, TYPING_STOP

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
