"""Dense retrieval with MiniLM sentence embeddings (:mod:`copilot.embeddings`): the recorded contexts nearest in
meaning to this one vote for their agents' replies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np

from copilot.context import Context, Suggestion
from copilot.embeddings import Embedder
from copilot.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import examples, query_text, rank_labels


@register_strategy
class DenseStrategy(Strategy):
    """Nearest neighbours by cosine of all-MiniLM-L6-v2 embeddings of the last ``window`` customer messages.

    Settings:
        window: how many of the latest customer messages form the query.
        neighbours: how many nearest recorded replies vote.
        temperature: a neighbour's vote is ``exp(cosine / temperature)``-weighted (0: plain sum of cosines).
        cache_dir: folder of the on-disk embedding cache (shared, SQLite); None keeps vectors in memory only.

    Pickles without the torch model: the :class:`~copilot.embeddings.Embedder` reloads it lazily.
    """

    name = "dense"

    def __init__(self, window: int = 1, neighbours: int = 20, temperature: float = 0.0,
                 cache_dir: str | None = None):
        self.window = window
        self.neighbours = neighbours
        self.temperature = temperature
        self.cache_dir = cache_dir

    def fit(self, data: Dataset) -> Self:
        self.embedder_ = Embedder(self.cache_dir)
        by_bot: dict[str, list[tuple[str, str | None, str]]] = {}
        for ex in examples(data):
            by_bot.setdefault(ex.chatbot, []).append((query_text(ex.context, self.window), ex.label, ex.text))
        all_rows = [row for rows in by_bot.values() for row in rows]
        vectors = self.embedder_.encode([q for q, _, _ in all_rows])
        self.index_: dict[str, tuple[np.ndarray, list[tuple[str | None, str]]]] = {}
        start = 0
        for bot, rows in by_bot.items():
            self.index_[bot] = (vectors[start:start + len(rows)], [(label, text) for _, label, text in rows])
            start += len(rows)
        self.responses_: Mapping[str, Mapping[str, str]] = {b: dict(data.responses(b)) for b in data.chatbot_ids()}
        return self

    def _rank(self, context: Context, query: np.ndarray, k: int) -> list[Suggestion]:
        entry = self.index_.get(context.chatbot)
        if entry is None:
            return []
        matrix, rows = entry
        sims = matrix @ query
        top = np.argsort(-sims, kind="stable")[: self.neighbours]
        votes: dict[tuple[str | None, str], float] = {}
        for i in top:
            label, text = rows[i]
            key = (label, text if label is None else "")
            weight = float(np.exp(sims[i] / self.temperature)) if self.temperature > 0 else float(sims[i])
            votes[key] = votes.get(key, 0.0) + weight
        ordered = sorted(votes.items(), key=lambda kv: -kv[1])
        candidates = ((label, text, score) for (label, text), score in ordered)
        return rank_labels(candidates, self.responses_.get(context.chatbot, {}), k)

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        return self.suggest_many([context], k)[0]

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """Encodes every known chatbot's query in one batch, then ranks each."""
        self._check_fitted("index_")
        wanted = [i for i, c in enumerate(contexts) if c.chatbot in self.index_]
        vectors = self.embedder_.encode([query_text(contexts[i], self.window) for i in wanted])
        out: list[list[Suggestion]] = [[] for _ in contexts]
        for row, i in enumerate(wanted):
            out[i] = self._rank(contexts[i], vectors[row], k)
        return out
