"""Lexical retrieval with TF-IDF (scikit-learn): the recorded agent replies whose contexts look most like this one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from sklearn.feature_extraction.text import TfidfVectorizer

from copilot.data.context import Context, Suggestion
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, register_strategy
from copilot.strategies.common import query_text, replies_by_chatbot, responses_by_chatbot, vote


@register_strategy
class TfidfStrategy(Strategy):
    """Nearest neighbours by TF-IDF cosine over the last ``window`` customer messages, per chatbot.

    Settings:
        window: how many of the latest customer messages form the query.
        ngram_max: word n-grams from 1 to this.
        sublinear_tf: log-scaled term frequencies.
        neighbours: how many nearest recorded replies vote; a label scores the sum of its neighbours' similarity.
        tools: add the summary of the latest lookup (what it found, or that it found nothing) to the query.
    """

    name = "tfidf"

    def __init__(self, window: int = 1, ngram_max: int = 2, sublinear_tf: bool = True, neighbours: int = 20,
                 tools: bool = True):
        self.window = window
        self.tools = tools
        self.ngram_max = ngram_max
        self.sublinear_tf = sublinear_tf
        self.neighbours = neighbours

    def fit(self, data: Dataset) -> Self:
        self.index_ = {}
        for bot, (queries, replies) in replies_by_chatbot(data, self.window, tools=self.tools).items():
            vectorizer = TfidfVectorizer(ngram_range=(1, self.ngram_max), sublinear_tf=self.sublinear_tf)
            self.index_[bot] = (vectorizer, vectorizer.fit_transform(queries), replies)
        self.responses_: Mapping[str, Mapping[str, str]] = responses_by_chatbot(data)
        return self

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        self._check_fitted("index_")
        entry = self.index_.get(context.chatbot)
        if entry is None:
            return []
        vectorizer, matrix, rows = entry
        query = query_text(context, self.window, tools=self.tools)
        sims = (matrix @ vectorizer.transform([query]).T).toarray().ravel()
        return vote(sims, rows, self.neighbours, self.responses_.get(context.chatbot, {}), k)
