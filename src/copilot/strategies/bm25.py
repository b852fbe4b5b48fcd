"""Lexical retrieval with BM25 (the ``bm25s`` package): the same nearest-neighbour vote as :mod:`tfidf`, scored
by Okapi BM25 instead of TF-IDF cosine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from copilot.context import Context, Suggestion
from copilot.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import examples, query_text, rank_labels


def _tokenize(texts: list[str], stopwords: str | None) -> list[list[str]]:
    import bm25s

    return list(bm25s.tokenize(texts, return_ids=False, show_progress=False, stopwords=stopwords))


@register_strategy
class Bm25Strategy(Strategy):
    """Nearest neighbours by BM25 over the last ``window`` customer messages, one index per chatbot.

    Settings:
        window: how many of the latest customer messages form the query (and each recorded context's document).
        k1, b: the BM25 term-frequency saturation and length normalisation.
        method: the BM25 variant of ``bm25s`` ("lucene", "robertson", "atire", "bm25l", "bm25+").
        stopwords: a ``bm25s`` stop-word list name ("en") or None to keep every word.
        neighbours: how many best-scoring recorded replies vote; a label scores the sum of its neighbours' scores.
    """

    name = "bm25"

    def __init__(self, window: int = 1, k1: float = 1.2, b: float = 0.75, method: str = "lucene",
                 stopwords: str | None = None, neighbours: int = 20):
        self.window = window
        self.k1 = k1
        self.b = b
        self.method = method
        self.stopwords = stopwords
        self.neighbours = neighbours

    def fit(self, data: Dataset) -> Self:
        import bm25s

        by_bot: dict[str, list[tuple[str, str | None, str]]] = {}
        for ex in examples(data):
            by_bot.setdefault(ex.chatbot, []).append((query_text(ex.context, self.window), ex.label, ex.text))
        index: dict[str, tuple[Any, list[tuple[str | None, str]]]] = {}
        for bot, rows in by_bot.items():
            retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            retriever.index(_tokenize([q for q, _, _ in rows], self.stopwords), show_progress=False)
            index[bot] = (retriever, [(label, text) for _, label, text in rows])
        self.index_ = index
        self.responses_: Mapping[str, Mapping[str, str]] = {b: dict(data.responses(b)) for b in data.chatbot_ids()}
        return self

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        self._check_fitted("index_")
        entry = self.index_.get(context.chatbot)
        if entry is None:
            return []
        retriever, rows = entry
        tokens = [t for t in _tokenize([query_text(context, self.window)], self.stopwords)[0]
                  if t and t in retriever.vocab_dict]
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(rows), dtype=np.float32)
        top = np.argsort(-scores, kind="stable")[: self.neighbours]
        votes: dict[tuple[str | None, str], float] = {}
        for i in top:
            label, text = rows[i]
            key = (label, text if label is None else "")
            votes[key] = votes.get(key, 0.0) + float(scores[i])
        ordered = sorted(votes.items(), key=lambda kv: -kv[1])
        candidates = ((label, text, score) for (label, text), score in ordered)
        return rank_labels(candidates, self.responses_.get(context.chatbot, {}), k)
