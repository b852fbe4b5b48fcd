"""Lexical retrieval with BM25 (the ``bm25s`` package): the same nearest-neighbour vote as :mod:`tfidf`, scored
by Okapi BM25 instead of TF-IDF cosine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import bm25s
import numpy as np

from copilot.data.context import Context, Suggestion
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import Reply, query_text, replies_by_chatbot, responses_by_chatbot, vote


def _tokenize(texts: list[str], stopwords: str | None) -> list[list[str]]:
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
        tools: add the summary of the latest lookup (what it found, or that it found nothing) to the query.
    """

    name = "bm25"

    def __init__(self, window: int = 1, k1: float = 1.2, b: float = 0.75, method: str = "lucene",
                 stopwords: str | None = None, neighbours: int = 20, tools: bool = True):
        self.window = window
        self.tools = tools
        self.k1 = k1
        self.b = b
        self.method = method
        self.stopwords = stopwords
        self.neighbours = neighbours

    def fit(self, data: Dataset) -> Self:
        index: dict[str, tuple[Any, list[Reply]]] = {}
        for bot, (queries, replies) in replies_by_chatbot(data, self.window, tools=self.tools).items():
            retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            retriever.index(_tokenize(queries, self.stopwords), show_progress=False)
            index[bot] = (retriever, replies)
        self.index_ = index
        self.responses_: Mapping[str, Mapping[str, str]] = responses_by_chatbot(data)
        return self

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        self._check_fitted("index_")
        entry = self.index_.get(context.chatbot)
        if entry is None:
            return []
        retriever, rows = entry
        tokens = [t for t in _tokenize([query_text(context, self.window, tools=self.tools)], self.stopwords)[0]
                  if t and t in retriever.vocab_dict]
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(rows), dtype=np.float32)
        return vote(scores, rows, self.neighbours, self.responses_.get(context.chatbot, {}), k)
