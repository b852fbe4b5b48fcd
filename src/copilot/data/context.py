"""What a copilot strategy sees and says: the conversation context and a reply suggestion.

The context is exactly what the live server knows when it asks for suggestions: the chatbot id and the messages
so far (customer, bot and agent, in order), each with the label of its response template where known. It never
holds an agent's draft, the screen's options, or the reply being predicted. Offline evaluation builds contexts
from recorded conversations (:func:`contexts_for`); the server builds them from its stored events
(:func:`context_from_events`). Both must give the same context for the same conversation state, which is what
lets a replay through the live server reproduce an offline evaluation exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from copilot.data.records import Conversation, Role
from copilot.live.protocol import KIND_MESSAGE


@dataclass(frozen=True)
class ContextTurn:
    role: Role
    text: str
    label: str | None = None


@dataclass(frozen=True)
class Context:
    """The conversation so far, as the server knows it, for one chatbot."""

    chatbot: str
    turns: tuple[ContextTurn, ...]

    def last(self, role: Role) -> ContextTurn | None:
        """The latest turn of ``role``, if any."""
        for turn in reversed(self.turns):
            if turn.role == role:
                return turn
        return None

    def labels(self) -> list[str]:
        """Labels of the earlier agent and bot replies, where known, oldest first."""
        return [t.label for t in self.turns if t.label is not None]


@dataclass(frozen=True)
class Suggestion:
    """One suggested reply. ``label`` is set when the text is a template of the chatbot's response set."""

    text: str
    score: float
    label: str | None = None


def contexts_for(conversation: Conversation) -> Iterator[tuple[int, Context]]:
    """For every agent turn, its index and the context just before it (everything earlier, nothing later)."""
    turns = tuple(ContextTurn(t.role, t.text, t.label) for t in conversation.turns)
    for index in conversation.agent_turn_indices():
        yield index, Context(conversation.chatbot, turns[:index])


def context_from_events(chatbot: str, events: Iterable[Mapping[str, Any]]) -> Context:
    """The context of a live conversation from its stored events (docs/protocol.md), in sequence order.

    Only ``message`` events are turns; state changes (escalated, claimed, ...) are not part of the text a
    strategy reads. A message's ``label`` is kept when the sender gave one.
    """
    ordered = sorted((e for e in events if e.get("kind") == KIND_MESSAGE), key=lambda e: int(e["seq"]))
    return Context(chatbot, tuple(ContextTurn(e["role"], e["text"], e.get("label")) for e in ordered))
