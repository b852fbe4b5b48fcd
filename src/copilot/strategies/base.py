"""The strategy contract (STYLE.md, after scikit-learn's estimators) and the strategy registry.

- Settings are ``__init__`` keyword arguments with defaults, stored verbatim under the same attribute names; no
  logic in ``__init__``. :meth:`Strategy.get_params` reads them back (it feeds MLflow params and search grids) and
  :meth:`Strategy.clone` builds a fresh, unfitted copy from them.
- ``fit(data) -> self`` learns from a :class:`~copilot.data.records.Dataset` (its conversations and each chatbot's
  response set); learned state lives in attributes ending in ``_``.
- ``suggest(context, k) -> list[Suggestion]``: at most ``k`` suggestions, best first, for the context the live
  server would have (:mod:`copilot.data.context`). A suggestion from the chatbot's response set carries its label and
  the template text. ``suggest_many`` answers a batch; strategies override it where batching helps.

Every class registered with :func:`register_strategy` is checked by one conformance test (tests/test_strategies.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from copilot.data.context import Context, Suggestion
from copilot.data.records import Dataset
from copilot.registry import Registry
from copilot.strategies.embeddings import Embedder, EmbeddingCache


class NotFittedError(RuntimeError):
    """``suggest`` was called before ``fit``."""


class Strategy:
    """Base class of every copilot strategy. Subclasses set ``name`` and implement ``fit`` and ``suggest``."""

    name: ClassVar[str] = ""
    _embedding_cache: EmbeddingCache | None = None  # not a setting: see use_embedding_cache

    @classmethod
    def param_names(cls) -> list[str]:
        """The keyword arguments of ``__init__``: the strategy's settings."""
        signature = inspect.signature(cls.__init__)
        return [
            p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The settings this strategy was built with (``__init__`` keyword arguments, read back verbatim)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Self:
        unknown = set(params) - set(self.param_names())
        if unknown:
            raise ValueError(f"{type(self).__name__} has no settings {sorted(unknown)} "
                             f"(settings: {self.param_names()})")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def clone(self, **overrides: Any) -> Self:
        """A fresh, unfitted strategy with the same settings (and ``overrides``)."""
        return type(self)(**{**self.get_params(), **overrides})

    def use_embedding_cache(self, cache: EmbeddingCache | None) -> Self:
        """Keep the sentence vectors this strategy computes in ``cache`` (None: in memory only); returns self.

        Not a setting: where vectors are kept changes nothing they compute, so it is not in :meth:`get_params` or
        :meth:`describe`, and it is not pickled (a strategy unpickled elsewhere gets that place's cache). It may
        be called before or after ``fit``; a strategy that embeds no text ignores it.
        """
        self._embedding_cache = cache
        embedder = self.__dict__.get("embedder_")
        if isinstance(embedder, Embedder):
            embedder.cache = cache
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_embedding_cache"}

    def fit(self, data: Dataset) -> Self:
        raise NotImplementedError

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        raise NotImplementedError

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """Suggestions for several contexts; the default calls :meth:`suggest` for each."""
        return [self.suggest(context, k) for context in contexts]

    def describe(self) -> str:
        """``name(key=value, ...)``: a readable, stable id of the strategy and its settings."""
        params = ", ".join(f"{key}={value!r}" for key, value in sorted(self.get_params().items()))
        return f"{self.name}({params})"

    def __repr__(self) -> str:
        return self.describe()

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(data) first")


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a strategy under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return STRATEGIES.register(cls.name)(cls)


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """A new strategy by registered name and settings; an unknown name gets "did you mean".

    The built-in families are registered by then: importing this module runs ``copilot.strategies`` first.
    """
    return STRATEGIES.get(name)(**dict(params or {}))
