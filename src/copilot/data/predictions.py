"""The per-turn predictions table: what offline evaluation and the replay through the live server both produce,
and what every metric reads (:mod:`copilot.evaluation.metrics`). Same table, same metric functions: that is how a
replay is checked against an offline evaluation.

One row per agent turn after the escalation (and per strategy). The suggestion scores let the tuner compute the
per-chatbot knobs (blend, threshold: :mod:`copilot.strategies.adapted`) from the predictions post hoc.

| column | type | meaning |
|---|---|---|
| ``strategy`` | str | the strategy's id (``Strategy.describe()``, ``champions``, or what the server named) |
| ``chatbot`` | str | the chatbot id |
| ``conversation_id`` | str | the recorded conversation |
| ``turn_index`` | int | index of the agent turn in the conversation's turns |
| ``truth_label`` | str or None | the template the agent picked, when known |
| ``truth_text`` | str | what the agent really sent |
| ``suggested_labels`` | list of str or None | labels of the suggestions, best first (None for free text) |
| ``suggested_texts`` | list of str | texts of the suggestions, best first |
| ``suggested_scores`` | list of float | the strategy's scores of the suggestions, best first (what the knobs fuse) |
| ``latency_ms`` | float | time to compute (offline) or from customer message to suggestions (replay) |
| ``tokens`` | int | LLM tokens spent for this turn (0 for other strategies) |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from copilot.data.context import Suggestion

COLUMNS = [
    "strategy", "chatbot", "conversation_id", "turn_index", "truth_label", "truth_text",
    "suggested_labels", "suggested_texts", "suggested_scores", "latency_ms", "tokens",
]


def prediction_row(
    *, strategy: str, chatbot: str, conversation_id: str, turn_index: int, truth_label: str | None,
    truth_text: str, suggestions: Iterable[Suggestion], latency_ms: float, tokens: int = 0,
) -> dict[str, Any]:
    items = list(suggestions)
    return {
        "strategy": strategy, "chatbot": chatbot, "conversation_id": conversation_id, "turn_index": int(turn_index),
        "truth_label": truth_label, "truth_text": truth_text,
        "suggested_labels": [s.label for s in items], "suggested_texts": [s.text for s in items],
        "suggested_scores": [float(s.score) for s in items],
        "latency_ms": float(latency_ms), "tokens": int(tokens),
    }


def predictions_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The table from rows, with exactly :data:`COLUMNS` in order (an empty table keeps the columns)."""
    return pd.DataFrame(list(rows), columns=COLUMNS)


def row_suggestions(row: Mapping[str, Any]) -> list[Suggestion]:
    """The suggestions of one row of the table, best first, with their scores (a table written before
    ``suggested_scores`` existed gives every suggestion the score NaN)."""
    texts = list(row["suggested_texts"])
    labels = row.get("suggested_labels")
    labels = list(labels) if labels is not None else [None] * len(texts)
    scores = row.get("suggested_scores")
    scores = list(scores) if scores is not None and not isinstance(scores, float) else [float("nan")] * len(texts)
    return [Suggestion(str(text), float(score), None if label is None else str(label))
            for text, label, score in zip(texts, labels, scores, strict=True)]


def score_shares(scores: Sequence[float]) -> list[float]:
    """Each score as its share of the list's total, so lists of different strategies are comparable (the first
    share is how sure the strategy is of its first suggestion). A negative score counts 0; a list whose clipped
    scores sum to 0 or are not finite shares equally."""
    clipped = [max(float(score), 0.0) for score in scores]
    total = sum(clipped)
    if not clipped:
        return []
    if not math.isfinite(total) or total <= 0:
        return [1.0 / len(clipped)] * len(clipped)
    return [score / total for score in clipped]
