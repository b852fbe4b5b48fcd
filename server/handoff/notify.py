"""Telling agents about an escalation (B1): the Notifier interface and the in-app notification.

The service calls :meth:`Notifier.escalated` once the escalation is stored. The only implementation today is
:class:`InAppNotifier`, which emits the protocol's ``escalation`` event to every connected agent registered for
the bot. Not built yet (a later issue): push to registered devices (Web Push, FCM, APNs) and the
unclaimed-escalation ladder (B10), which will call the same interface again; a composite notifier will fan out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from copilot.protocol import EV_ESCALATION


@dataclass(frozen=True)
class EscalationNotice:
    """What agents are told about a waiting conversation."""

    conversation_id: str
    bot_id: str
    reason: str | None
    preview: str | None
    waiting_since: str
    seq: int

    def payload(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "bot_id": self.bot_id, "reason": self.reason,
                "preview": self.preview, "waiting_since": self.waiting_since, "seq": self.seq}


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
    """Every notifier in turn (in-app first, then slower channels)."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = tuple(notifiers)

    async def escalated(self, notice: EscalationNotice) -> None:
        for notifier in self.notifiers:
            await notifier.escalated(notice)
