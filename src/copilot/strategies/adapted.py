"""Per-chatbot knobs on top of one shared strategy: a blend with a partner strategy and a trigger threshold.

One base strategy (the shared model every chatbot uses) and its partners are fitted once on the whole training data.
Each chatbot may then have its own knobs, chosen on dev by :mod:`copilot.evaluation.tuning`:

- **blend** ``w`` with a named partner: both strategies' top lists are normalised to sum 1 and fused per label,
  ``(1 − w) · base + w · partner`` (:func:`fuse`);
- **threshold** ``t``: when the top fused score (with ``w = 0``: the base's top normalised score) is below ``t``,
  the chatbot gets no suggestion for that turn at all (Smart Reply's triggering: show nothing rather than a guess).

A chatbot without knobs gets exactly the base's answer. :func:`fuse` is the one place the fusion is computed: the
strategy calls it on its members' live answers, the tuner on the members' dev predictions, so what tuning measured
is what evaluation, export and the live server compute.

On the live server a turn whose suggestions a threshold hid gets a ``suggestions`` event with no items
(docs/protocol.md), so the console clears the earlier ones and a replay records the empty answer like the offline
evaluation does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from copilot.data.context import Context, Suggestion
from copilot.data.predictions import score_shares
from copilot.data.records import Dataset
from copilot.strategies.base import Strategy, make_strategy, register_strategy
from copilot.strategies.embeddings import EmbeddingCache

#: The base when none is given (cheap, so the default settings fit in a moment).
DEFAULT_BASE: dict[str, Any] = {"strategy": "tfidf", "params": {}}
KNOB_KEYS = frozenset({"partner", "blend", "threshold"})


def suggestion_key(suggestion: Suggestion) -> str:
    """What identifies a suggestion across strategies: its label, or its text for a free-text suggestion."""
    return f"label:{suggestion.label}" if suggestion.label is not None else f"text:{suggestion.text}"


def normalised(items: Sequence[Suggestion]) -> list[float]:
    """Each suggestion's score as its share of the list's total (:func:`copilot.data.predictions.score_shares`:
    a negative score counts 0, a list that sums to 0 shares equally)."""
    return score_shares([s.score for s in items])


def blended(base: Sequence[Suggestion], partner: Sequence[Suggestion], blend: float) -> list[Suggestion]:
    """Every suggestion of either list scored ``(1 − blend) · base share + blend · partner share`` (a list that
    misses one counts 0 for it), best first; ties keep the base's order, then the partner's."""
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"a blend weight lies in [0, 1], not {blend}")
    scores: dict[str, float] = {}
    first: dict[str, Suggestion] = {}
    for weight, items in ((1.0 - blend, base), (blend, partner)):
        for suggestion, share in zip(items, normalised(items), strict=True):
            key = suggestion_key(suggestion)
            scores[key] = scores.get(key, 0.0) + weight * share
            first.setdefault(key, suggestion)
    ordered = sorted(scores, key=lambda key: -scores[key])  # stable: ties in insertion order
    return [Suggestion(first[key].text, scores[key], first[key].label) for key in ordered]


def _fused(base: Sequence[Suggestion], partner: Sequence[Suggestion] | None, blend: float
           ) -> tuple[list[Suggestion], float]:
    """The suggestions of :func:`fuse` before the threshold, and their :func:`confidence`."""
    if blend > 0:
        items = blended(base, partner or [], blend)
        return items, items[0].score if items else 0.0
    return list(base), normalised(base)[0] if base else 0.0


def confidence(base: Sequence[Suggestion], partner: Sequence[Suggestion] | None = None, *,
               blend: float = 0.0) -> float:
    """What the trigger threshold compares: the top fused score when ``blend > 0``, otherwise the base's top
    normalised score; 0 when there is no suggestion."""
    return _fused(base, partner, blend)[1]


def fuse(base: Sequence[Suggestion], partner: Sequence[Suggestion] | None = None, *, blend: float = 0.0,
         threshold: float | None = None, k: int) -> list[Suggestion]:
    """One chatbot's knobs applied to one turn: the base's and the partner's top lists (best first, as deep as the
    normalisation should reach) in, at most ``k`` suggestions out.

    ``blend > 0`` fuses the two lists (:func:`blended`); ``blend == 0`` keeps the base's suggestions as they are.
    With a ``threshold``, a turn whose :func:`confidence` is below it gets no suggestion.
    """
    items, top = _fused(base, partner, blend)
    if threshold is not None and top < threshold:
        return []
    return items[:k]


@dataclass(frozen=True)
class Knobs:
    """One chatbot's knobs, as :class:`AdaptedStrategy` reads them from ``per_chatbot``."""

    partner: str | None = None
    blend: float = 0.0
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``per_chatbot`` entry: only what is set."""
        out: dict[str, Any] = {}
        if self.blend > 0:
            out["partner"], out["blend"] = self.partner, self.blend
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


def read_knobs(chatbot: str, entry: Mapping[str, Any], partners: Sequence[str]) -> Knobs:
    """A ``per_chatbot`` entry checked: known keys, a blend in [0, 1] with a named partner (the only one when there
    is one), a threshold in [0, 1]."""
    unknown = set(entry) - KNOB_KEYS
    if unknown:
        raise ValueError(f"per_chatbot.{chatbot}: unknown knobs {sorted(unknown)} (knobs: {sorted(KNOB_KEYS)})")
    blend = float(entry.get("blend") or 0.0)
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"per_chatbot.{chatbot}: blend {blend} is not in [0, 1]")
    partner = entry.get("partner")
    if blend > 0:
        if partner is None and len(partners) == 1:
            partner = partners[0]
        if partner not in partners:
            raise ValueError(f"per_chatbot.{chatbot}: blend {blend} needs a partner of {sorted(partners)}, "
                             f"not {partner!r}")
    threshold = entry.get("threshold")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"per_chatbot.{chatbot}: threshold {threshold} is not in [0, 1]")
    return Knobs(str(partner) if blend > 0 else None, blend, None if threshold is None else float(threshold))


@register_strategy
class AdaptedStrategy(Strategy):
    """One shared base strategy with per-chatbot knobs on top (the module docstring); fitted once for all chatbots.

    Settings (JSON-able):
        base: ``{"strategy": name, "params": {...}}``, the shared model; None means :data:`DEFAULT_BASE`.
        partners: ``{name: {"strategy": name, "params": {...}}}``, the strategies a chatbot may blend with; each is
            fitted once, whatever the number of chatbots that use it.
        per_chatbot: ``{chatbot: {"partner": name, "blend": w, "threshold": t}}``, each key optional (``partner``
            may be left out when there is one partner); a chatbot not named gets exactly the base's answer.
        depth: how deep each member's list goes before normalising and fusing (``max(depth, k)`` when asked
            for more); the tuner sets it to the task's ``k``, the depth of the dev predictions it fused.
    """

    name = "adapted"

    def __init__(self, base: dict[str, Any] | None = None, partners: dict[str, dict[str, Any]] | None = None,
                 per_chatbot: dict[str, dict[str, Any]] | None = None, depth: int = 5):
        self.base = base
        self.partners = partners
        self.per_chatbot = per_chatbot
        self.depth = depth

    _fitted_member: Callable[[str, Mapping[str, Any]], Strategy | None] | None = None  # see reuse_fitted

    def reuse_fitted(self, lookup: Callable[[str, Mapping[str, Any]], Strategy | None] | None) -> Self:
        """Let :meth:`fit` take a member already fitted on the same data instead of fitting it again: ``lookup(name,
        params)`` returns it or None (the evaluation hands over the task's strategies it fitted on train). Not a
        setting and not pickled, like the embedding cache; returns self."""
        self._fitted_member = lookup
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in super().__getstate__().items() if key != "_fitted_member"}

    def _member(self, spec: Mapping[str, Any], data: Dataset) -> Strategy:
        found = self._fitted_member(spec["strategy"], spec.get("params") or {}) if self._fitted_member else None
        if found is not None:
            return found
        return make_strategy(spec["strategy"], spec.get("params")).use_embedding_cache(self._embedding_cache).fit(data)

    def _base_spec(self) -> Mapping[str, Any]:
        return self.base if self.base is not None else DEFAULT_BASE

    def _knobs(self) -> dict[str, Knobs]:
        names = sorted(self.partners or {})
        return {str(bot): read_knobs(str(bot), entry, names) for bot, entry in (self.per_chatbot or {}).items()}

    def fit(self, data: Dataset) -> Self:
        """Fit the base and every partner once on ``data`` (all chatbots), or take them from :meth:`reuse_fitted`."""
        knobs = self._knobs()
        self.base_ = self._member(self._base_spec(), data)
        self.partners_ = {name: self._member(p, data) for name, p in sorted((self.partners or {}).items())}
        self.knobs_ = knobs
        return self

    def use_embedding_cache(self, cache: EmbeddingCache | None) -> Self:
        """The members' cache too (see :meth:`Strategy.use_embedding_cache`)."""
        for member in [self.__dict__.get("base_"), *self.__dict__.get("partners_", {}).values()]:
            if member is not None:
                member.use_embedding_cache(cache)
        return super().use_embedding_cache(cache)

    def suggest(self, context: Context, k: int = 3) -> list[Suggestion]:
        return self.suggest_many([context], k)[0]

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        """The base answers the whole batch (chatbots without knobs at ``k``, exactly its own answer; chatbots with
        knobs at ``max(depth, k)``); each partner answers the contexts of the chatbots that blend with it."""
        self._check_fitted("base_")
        depth = max(int(self.depth), k)
        tuned = [i for i, c in enumerate(contexts) if c.chatbot in self.knobs_]
        plain = [i for i, c in enumerate(contexts) if c.chatbot not in self.knobs_]
        out: list[list[Suggestion]] = [[] for _ in contexts]
        for indices, deep in ((plain, k), (tuned, depth)) if depth != k else ((plain + tuned, k),):
            if indices:
                for i, answer in zip(indices, self.base_.suggest_many([contexts[i] for i in indices], deep),
                                     strict=True):
                    out[i] = list(answer)
        partner_answers: dict[int, list[Suggestion]] = {}
        for name, partner in self.partners_.items():
            users = [i for i in tuned if self.knobs_[contexts[i].chatbot].partner == name]
            if users:
                answers = partner.suggest_many([contexts[i] for i in users], depth)
                partner_answers.update({i: list(a) for i, a in zip(users, answers, strict=True)})
        for i in tuned:
            knobs = self.knobs_[contexts[i].chatbot]
            out[i] = fuse(out[i][:depth], partner_answers.get(i, [])[:depth], blend=knobs.blend,
                          threshold=knobs.threshold, k=k)
        return [answer[:k] for answer in out]

    def describe(self) -> str:
        """``adapted(base=..., partners=..., depth=..., per_chatbot=...)`` with the members' own ids; many
        chatbots' knobs are shown as their number and a hash, so the id stays short enough to name a served model."""
        spec = self._base_spec()
        base = make_strategy(spec["strategy"], spec.get("params")).describe()
        partners = {name: make_strategy(p["strategy"], p.get("params")).describe()
                    for name, p in sorted((self.partners or {}).items())}
        knobs = json.dumps(self.per_chatbot or {}, sort_keys=True, default=str)
        shown = knobs if len(knobs) <= 200 else (
            f"{len(self.per_chatbot or {})} chatbots #{hashlib.sha256(knobs.encode()).hexdigest()[:12]}")
        return f"adapted(base={base}, partners={partners}, depth={self.depth!r}, per_chatbot={shown})"
