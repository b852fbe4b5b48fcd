"""What a copilot strategy sees and says: the conversation context and a reply suggestion.

The context is exactly what the live server knows when it asks for suggestions: the chatbot id and the messages
so far (customer, bot and agent, in order), each with the label of its response template where known, and the
lookups the bot or the agent made (tool turns: what was asked and what came back) at their place. It never
holds an agent's draft, the screen's options, or the reply being predicted. Offline evaluation builds contexts
from recorded conversations (:func:`contexts_for`); the server builds them from its stored events
(:func:`context_from_events`). Both must give the same context for the same conversation state, which is what
lets a replay through the live server reproduce an offline evaluation exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from copilot.data.records import Conversation, Maker, Role, ToolCall, Turn
from copilot.live.protocol import KIND_MESSAGE, KIND_TOOL

RENDERED_VALUE_CHARS = 200  # a longer value is cut in a tool turn's text
RENDERED_ITEMS = 3  # a tool result's text shows this many of its items


@dataclass(frozen=True)
class ContextTurn:
    """A message (role, text, label), or a tool turn: ``tool`` holds the lookup, ``by`` who made it, and ``text``
    its rendering (:func:`render_tool`), which is what text-matching strategies read."""

    role: Role
    text: str
    label: str | None = None
    tool: ToolCall | None = None
    by: Maker | None = None


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

    def last_tool(self) -> tuple[int, ContextTurn] | None:
        """The latest tool turn and how many turns came after it, if any."""
        for back, turn in enumerate(reversed(self.turns)):
            if turn.tool is not None:
                return back, turn
        return None


@dataclass(frozen=True)
class Suggestion:
    """One suggested reply. ``label`` is set when the text is a template of the chatbot's response set."""

    text: str
    score: float
    label: str | None = None


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, list):
        text = ", ".join(_value_text(v) for v in value)
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= RENDERED_VALUE_CHARS else text[: RENDERED_VALUE_CHARS - 1] + "…"


def _fields_text(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_value_text(fields[key])}" for key in sorted(fields))


def result_items(result: Mapping[str, Any] | None) -> list[Any]:
    """The records a lookup returned: ``result["items"]`` when it is a list, else the result itself as one
    record (an empty result or ``None``: no records)."""
    if not result:
        return []
    items = result.get("items")
    if isinstance(items, list):
        return items
    return [result]


def result_total(result: Mapping[str, Any] | None) -> int:
    """How many records the lookup found: ``result["total"]`` when it is a count, else the records returned."""
    total = (result or {}).get("total")
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return len(result_items(result))


def render_tool(tool: ToolCall) -> str:
    """A tool turn as one line of text: the name, the request fields, then the error or what came back (the first
    few records, keys sorted so that the same lookup always reads the same)."""
    head = f"{tool.name}({_fields_text(tool.request)})"
    if tool.error is not None:
        return f"{head} failed: {tool.error}"
    items = result_items(tool.result)
    if not items:
        return f"{head} found nothing"
    shown = [(_fields_text(i) if isinstance(i, Mapping) else _value_text(i)) for i in items[:RENDERED_ITEMS]]
    total = result_total(tool.result)
    count = f"{total} result" + ("" if total == 1 else "s")
    return f"{head} found {count}: " + " | ".join(shown)


def tool_turn(tool: ToolCall, by: Maker | None) -> ContextTurn:
    """A lookup as a context turn: its rendering is the text."""
    return ContextTurn("tool", render_tool(tool), None, tool, by)


def _context_turn(turn: Turn) -> ContextTurn:
    if turn.tool is not None:
        return tool_turn(turn.tool, turn.by)
    return ContextTurn(turn.role, turn.text, turn.label)


def contexts_for(conversation: Conversation) -> Iterator[tuple[int, Context]]:
    """For every agent turn, its index and the context just before it (everything earlier, nothing later)."""
    turns = tuple(_context_turn(t) for t in conversation.turns)
    for index in conversation.agent_turn_indices():
        yield index, Context(conversation.chatbot, turns[:index])


def _event_turn(event: Mapping[str, Any]) -> ContextTurn:
    if event.get("kind") == KIND_TOOL:
        tool = ToolCall(str(event["name"]), event.get("request") or {}, event.get("result"), event.get("error"))
        return tool_turn(tool, event.get("role"))
    return ContextTurn(event["role"], event["text"], event.get("label"))


def context_from_events(chatbot: str, events: Iterable[Mapping[str, Any]]) -> Context:
    """The context of a live conversation from its stored events (docs/protocol.md), in sequence order.

    ``message`` and ``tool`` events are turns; state changes (escalated, claimed, ...) are not part of what a
    strategy reads. A message's ``label`` is kept when the sender gave one; a tool event becomes a tool turn made
    by its sender's role, exactly as :func:`contexts_for` builds it from a recorded tool turn.
    """
    kept = (KIND_MESSAGE, KIND_TOOL)
    ordered = sorted((e for e in events if e.get("kind") in kept), key=lambda e: int(e["seq"]))
    return Context(chatbot, tuple(_event_turn(e) for e in ordered))
