"""Telling agents about an escalation: the Notifier interface, the in-app notification, and the composite.

The service calls :meth:`Notifier.escalated` once the escalation is stored, and the unclaimed-escalation ladder
(handoff.ladder) calls it again for each re-notification (``renotify`` counts them). The app's notifier is a
:class:`CompositeNotifier`: first :class:`InAppNotifier` (the protocol's ``escalation`` event to every connected
agent registered for the bot, emitted before the escalation's ack), then :class:`handoff.push.PushNotifier`, which
only starts a background fan-out to every registered device and returns at once, so pushes never delay the chat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from copilot.live.protocol import EV_ESCALATION


@dataclass(frozen=True)
class EscalationNotice:
    """What agents are told about a waiting conversation."""

    conversation_id: str
    bot_id: str
    reason: str | None
    preview: str | None
    waiting_since: str
    seq: int
    bot_name: str = ""
    renotify: int = 0  # 0: the escalation itself; n: the ladder's n-th reminder

    def payload(self) -> dict[str, Any]:
        """The ``escalation`` event's payload."""
        return {"conversation_id": self.conversation_id, "bot_id": self.bot_id, "reason": self.reason,
                "preview": self.preview, "waiting_since": self.waiting_since, "seq": self.seq,
                "renotify": self.renotify}


class Notifier(Protocol):
    async def escalated(self, notice: EscalationNotice) -> None:
        """Tell the bot's agents; must return quickly (slow channels run in their own tasks)."""
        ...


# (event, payload, bot_id) -> emitted to every connected agent registered for that bot.
EmitToBotAgents = Callable[[str, dict[str, Any], str], Awaitable[None]]


class InAppNotifier:
    """The ``escalation`` Socket.IO event to the bot's connected agents."""

    def __init__(self, emit_to_bot_agents: EmitToBotAgents) -> None:
        self._emit = emit_to_bot_agents

    async def escalated(self, notice: EscalationNotice) -> None:
        await self._emit(EV_ESCALATION, notice.payload(), notice.bot_id)


class CompositeNotifier:
    """Every notifier in turn (in-app first, then slower channels, which must only start their work)."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = tuple(notifiers)

    async def escalated(self, notice: EscalationNotice) -> None:
        for notifier in self.notifiers:
            await notifier.escalated(notice)
