"""Hybrids: several member strategies' rankings fused by weighted reciprocal-rank fusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from copilot.data.context import Context, Suggestion
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, make_strategy, register_strategy
from copilot.strategies.embeddings import EmbeddingCache

#: The members when none are given: lexical retrieval and the classifier.
DEFAULT_MEMBERS: list[dict[str, Any]] = [{"strategy": "bm25", "params": {}}, {"strategy": "classifier", "params": {}}]


@register_strategy
class HybridStrategy(Strategy):
    """Weighted reciprocal-rank fusion: a suggestion scores ``sum(weight_m / (rrf_k + rank_m))`` over the members
    that suggest it (rank from 1), one entry per label (free texts by their text).

    Settings (JSON-able, so they go to MLflow and grids as they are):
        members: a list of ``{"strategy": name, "params": {...}}``; None means :data:`DEFAULT_MEMBERS`.
        weights: one weight per member; None weighs them equally.
        rrf_k: the fusion constant (larger flattens the rank differences).
        depth: how many suggestions each member is asked for.
    """

    name = "hybrid"

    def __init__(self, members: list[dict[str, Any]] | None = None, weights: list[float] | None = None,
                 rrf_k: float = 60.0, depth: int = 10):
        self.members = members
        self.weights = weights
        self.rrf_k = rrf_k
        self.depth = depth

    def _specs(self) -> Sequence[Mapping[str, Any]]:
        specs = self.members if self.members is not None else DEFAULT_MEMBERS
        if not specs:
            raise ValueError("a hybrid needs at least one member")
        if self.weights is not None and len(self.weights) != len(specs):
            raise ValueError(f"{len(self.weights)} weights for {len(specs)} members")
        return specs

    def fit(self, data: Dataset) -> Self:
        specs = self._specs()
        self.members_ = [make_strategy(spec["strategy"], spec.get("params")).use_embedding_cache(self._embedding_cache)
                         .fit(data) for spec in specs]
        self.weights_ = [float(w) for w in self.weights] if self.weights is not None else [1.0] * len(specs)
        return self

    def use_embedding_cache(self, cache: EmbeddingCache | None) -> Self:
        """The members' cache too (see :meth:`Strategy.use_embedding_cache`)."""
        for member in self.__dict__.get("members_", []):
            member.use_embedding_cache(cache)
        return super().use_embedding_cache(cache)

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        return self.suggest_many([context], k)[0]

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """Asks each member for the whole batch (so members that batch, batch), then fuses per context."""
        self._check_fitted("members_")
        answers = [member.suggest_many(contexts, max(self.depth, k)) for member in self.members_]
        return [self._fuse([answer[i] for answer in answers], k) for i in range(len(contexts))]

    def _fuse(self, rankings: list[list[Suggestion]], k: int) -> list[Suggestion]:
        scores: dict[str, float] = {}
        first: dict[str, Suggestion] = {}
        for weight, ranking in zip(self.weights_, rankings, strict=True):
            for rank, suggestion in enumerate(ranking, start=1):
                key = f"label:{suggestion.label}" if suggestion.label is not None else f"text:{suggestion.text}"
                scores[key] = scores.get(key, 0.0) + weight / (self.rrf_k + rank)
                first.setdefault(key, suggestion)
        ordered = sorted(scores, key=lambda key: -scores[key])[:k]
        return [Suggestion(first[key].text, scores[key], first[key].label) for key in ordered]
