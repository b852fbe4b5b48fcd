"""What the retrieval-style strategies share: training examples from recorded conversations and query texts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from copilot.context import Context, Suggestion, contexts_for
from copilot.records import Dataset


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


def query_text(context: Context, window: int = 1, roles: tuple[str, ...] = ("customer",)) -> str:
    """The text a retrieval strategy matches on: the last ``window`` turns of the given roles, oldest first."""
    picked = [t.text for t in context.turns if t.role in roles][-window:] if window > 0 else []
    return "\n".join(picked)


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
