"""What the retrieval-style strategies share: training examples from recorded conversations and query texts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from copilot.data.context import Context, Suggestion, contexts_for, result_items, result_total
from copilot.data.records import Dataset, ToolCall

SUMMARY_VALUE_CHARS = 80  # a result's text values up to this length are part of a lookup's summary


def responses_by_chatbot(data: Dataset) -> dict[str, Mapping[str, str]]:
    """Each chatbot's response set (label -> template text), as a strategy keeps it after fitting."""
    return {b: dict(data.responses(b)) for b in data.chatbot_ids()}


def require_choice(setting: str, value: str, choices: Sequence[str]) -> None:
    """Raise ValueError naming the setting unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {tuple(choices)}, not {value!r}")


@dataclass(frozen=True)
class Example:
    """One recorded agent reply and the context it answered."""

    chatbot: str
    context: Context
    text: str
    label: str | None


def examples(data: Dataset) -> Iterator[Example]:
    """Every agent turn of ``data`` with its context (nothing after it, never the draft)."""
    for conversation in data.conversations:
        for index, context in contexts_for(conversation):
            turn = conversation.turns[index]
            yield Example(conversation.chatbot, context, turn.text, turn.label)


def tool_outcome(tool: ToolCall) -> str:
    """``error``, ``none`` (nothing came back) or ``items``."""
    if tool.error is not None:
        return "error"
    return "items" if result_items(tool.result) else "none"


def tool_summary(tool: ToolCall) -> str:
    """A lookup in a few words: its name, whether it found something, failed or found nothing, and the short text
    and yes/no values of the first record it returned (a status, a message), keys sorted."""
    outcome = tool_outcome(tool)
    words = {"error": "failed", "none": "found nothing", "items": f"found {result_total(tool.result)}"}[outcome]
    parts = [tool.name.replace("_", " "), words]
    items = result_items(tool.result)
    first = items[0] if items and isinstance(items[0], Mapping) else {}
    for key in sorted(first):
        value = first[key]
        if isinstance(value, bool) or (isinstance(value, str) and len(value) <= SUMMARY_VALUE_CHARS):
            parts.append(f"{key} {value}")
    if tool.error is not None:
        parts.append(tool.error[:SUMMARY_VALUE_CHARS])
    return " ".join(parts)


def query_text(context: Context, window: int = 1, roles: tuple[str, ...] = ("customer",), *,
               tools: bool = False) -> str:
    """The text a retrieval strategy matches on: the last ``window`` turns of the given roles, oldest first, and
    (``tools``) the summary of the latest lookup (:func:`tool_summary`) when no reply came after it: a lookup
    nobody has told the customer about yet is what the next reply is likely to be about."""
    picked = [t.text for t in context.turns if t.role in roles][-window:] if window > 0 else []
    if tools:
        fresh = fresh_tool_summary(context)
        if fresh:
            picked.append(fresh)
    return "\n".join(picked)


def fresh_tool_summary(context: Context) -> str:
    """The summary of the latest lookup if no agent or bot reply came after it, else ``""``."""
    latest = context.last_tool()
    if latest is None or latest[1].tool is None:
        return ""
    since, turn = latest
    later = context.turns[len(context.turns) - since:] if since else ()
    if any(t.role in ("agent", "bot") for t in later):
        return ""
    assert turn.tool is not None
    return tool_summary(turn.tool)


def rank_labels(
    scored: Iterator[tuple[str | None, str, float]], responses: Mapping[str, str], k: int
) -> list[Suggestion]:
    """Best-first suggestions from (label, text, score) candidates sorted by descending score: one per label
    (the chatbot's template text when the label is in its response set), free texts deduplicated by text."""
    out: list[Suggestion] = []
    seen: set[str] = set()
    for label, text, score in scored:
        key = f"label:{label}" if label is not None else f"text:{text}"
        if key in seen:
            continue
        seen.add(key)
        if label is not None and label in responses:
            out.append(Suggestion(responses[label], float(score), label))
        else:
            out.append(Suggestion(text, float(score), label))
        if len(out) == k:
            break
    return out


#: A recorded reply a retrieval index points at: its label (None for free text) and its text.
Reply = tuple[str | None, str]


def replies_by_chatbot(data: Dataset, window: int, *, tools: bool = False
                       ) -> dict[str, tuple[list[str], list[Reply]]]:
    """Per chatbot, the query text of every recorded agent reply's context (:func:`query_text`) and the reply."""
    out: dict[str, tuple[list[str], list[Reply]]] = {}
    for ex in examples(data):
        queries, replies = out.setdefault(ex.chatbot, ([], []))
        queries.append(query_text(ex.context, window, tools=tools))
        replies.append((ex.label, ex.text))
    return out


def vote(scores: np.ndarray, replies: Sequence[Reply], neighbours: int, responses: Mapping[str, str], k: int,
         weight: float = 0.0) -> list[Suggestion]:
    """kNN voting: the ``neighbours`` best-scoring recorded replies vote for their label (free texts for their
    text) with their score, or ``exp(score / weight)`` when ``weight > 0``; best-first suggestions."""
    votes: dict[Reply, float] = {}
    for i in np.argsort(-scores, kind="stable")[:neighbours]:
        label, text = replies[i]
        key = (label, text if label is None else "")
        votes[key] = votes.get(key, 0.0) + (float(np.exp(scores[i] / weight)) if weight > 0 else float(scores[i]))
    ordered = sorted(votes.items(), key=lambda kv: -kv[1])
    return rank_labels(((label, text, score) for (label, text), score in ordered), responses, k)
