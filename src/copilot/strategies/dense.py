"""Dense retrieval with MiniLM sentence embeddings (:mod:`copilot.strategies.embeddings`): the recorded contexts
nearest in meaning to this one vote for their agents' replies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np

from copilot.data.context import Context, Suggestion
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import Reply, query_text, replies_by_chatbot, responses_by_chatbot, vote
from copilot.strategies.embeddings import Embedder


@register_strategy
class DenseStrategy(Strategy):
    """Nearest neighbours by cosine of all-MiniLM-L6-v2 embeddings of the last ``window`` customer messages.

    Settings:
        window: how many of the latest customer messages form the query.
        neighbours: how many nearest recorded replies vote.
        temperature: a neighbour's vote is ``exp(cosine / temperature)``-weighted (0: plain sum of cosines).
        tools: add the summary of the latest lookup (what it found, or that it found nothing) to the query.

    Vectors are cached where :meth:`use_embedding_cache` says (in memory by default). Pickles without the torch
    model: the :class:`~copilot.strategies.embeddings.Embedder` reloads it lazily.
    """

    name = "dense"

    def __init__(self, window: int = 1, neighbours: int = 20, temperature: float = 0.0, tools: bool = True):
        self.window = window
        self.tools = tools
        self.neighbours = neighbours
        self.temperature = temperature

    def fit(self, data: Dataset) -> Self:
        self.embedder_ = Embedder(self._embedding_cache)
        by_bot = replies_by_chatbot(data, self.window, tools=self.tools)
        vectors = self.embedder_.encode([q for queries, _ in by_bot.values() for q in queries])
        self.index_: dict[str, tuple[np.ndarray, list[Reply]]] = {}
        start = 0
        for bot, (queries, replies) in by_bot.items():
            self.index_[bot] = (vectors[start:start + len(queries)], replies)
            start += len(queries)
        self.responses_: Mapping[str, Mapping[str, str]] = responses_by_chatbot(data)
        return self

    def _rank(self, context: Context, query: np.ndarray, k: int) -> list[Suggestion]:
        entry = self.index_.get(context.chatbot)
        if entry is None:
            return []
        matrix, rows = entry
        return vote(matrix @ query, rows, self.neighbours, self.responses_.get(context.chatbot, {}), k,
                    weight=self.temperature)

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        return self.suggest_many([context], k)[0]

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """Encodes every known chatbot's query in one batch, then ranks each."""
        self._check_fitted("index_")
        wanted = [i for i, c in enumerate(contexts) if c.chatbot in self.index_]
        vectors = self.embedder_.encode([query_text(contexts[i], self.window, tools=self.tools) for i in wanted])
        out: list[list[Suggestion]] = [[] for _ in contexts]
        for row, i in enumerate(wanted):
            out[i] = self._rank(contexts[i], vectors[row], k)
        return out
