"""Copilot strategies: one interface (:mod:`copilot.strategies.base`), families registered by name.

Importing this package registers every built-in family.
"""

from copilot.strategies import adapted, bm25, classifier, dense, hybrid, llm, tfidf  # noqa: F401  (registers)
from copilot.strategies.base import STRATEGIES, NotFittedError, Strategy, make_strategy, register_strategy

__all__ = ["STRATEGIES", "NotFittedError", "Strategy", "make_strategy", "register_strategy"]
