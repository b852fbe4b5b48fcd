"""Metrics over the per-turn predictions table (:mod:`copilot.data.predictions`), with bootstrap intervals
resampled by conversation.

Every metric is registered in :data:`METRICS` with ``higher_is_better``; winner selection reads only that flag.
A metric turns the table into one value per turn and a mask of the turns it counts:

- ``recall@k`` (k = 1, 3, 5): over labelled agent turns (``truth_label`` known), 1 when the truth label is among
  the first k ``suggested_labels``.
- ``mrr``: over labelled agent turns, 1 / rank of the truth label among ``suggested_labels`` (0 when absent).
- ``semantic@k`` (k = 1, 3): over free-typed agent turns (``truth_label`` None), 1 when one of the first k
  suggested texts has MiniLM cosine >= :data:`SEMANTIC_THRESHOLD` (0.7) with what the agent really sent. Needs an
  :class:`~copilot.strategies.embeddings.Embedder`; computed only when asked for.
- ``coverage``: over all agent turns, 1 when there is at least one suggestion.
- ``precision@1``: over labelled agent turns that got at least one suggestion, 1 when the first suggestion is the
  truth label: how often the suggestion is right when one is shown. recall@k counts a turn without suggestion as a
  miss, precision@1 does not count it, so a trigger threshold that hides unsure suggestions lowers recall@1 and
  coverage and can raise precision@1 (:mod:`copilot.strategies.adapted`).
- ``tokens``: over all agent turns, the mean LLM tokens per turn.
- ``latency_p50``, ``latency_p95``: percentiles of ``latency_ms`` over all agent turns (no interval).

A mean metric is a ratio of sums, so it can be resampled by conversation: the turns of one conversation are not
independent (same customer, same task), and resampling turns would make the intervals too narrow. The bootstrap
draws conversations with replacement (``n_boot`` draws, seeded, a multinomial count per conversation) and takes
the 2.5 and 97.5 percentiles of the recomputed metric. The paired comparison does the same on the per-conversation
sums of the difference between two strategies on the same turns.

Everything here depends only on the table, so the replay through the live server is scored by the same code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from copilot.registry import Registry

if TYPE_CHECKING:
    from copilot.strategies.embeddings import Embedder

SEMANTIC_THRESHOLD = 0.7
CONFIDENCE = 0.95
DEFAULT_METRICS = ("recall@1", "recall@3", "recall@5", "mrr", "coverage", "precision@1", "latency_p50", "latency_p95",
                   "tokens")

TurnValues = Callable[[pd.DataFrame, "Embedder | None"], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Metric:
    """A metric: per-turn values and the mask of turns it counts, and how they are reduced.

    ``reduce`` is ``mean`` (a ratio of sums: bootstrap intervals) or a percentile ``p50``/``p95`` (no interval).
    """

    name: str
    higher_is_better: bool
    turn_values: TurnValues
    reduce: Literal["mean", "p50", "p95"] = "mean"
    needs_embedder: bool = False
    description: str = ""
    # for metrics of the truth label's rank (recall@k, mrr): the per-turn value from the ranks, so a table's
    # ranks are computed once for all of them
    from_ranks: Callable[[np.ndarray], np.ndarray] | None = None


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name)(metric)


def _labelled(frame: pd.DataFrame) -> np.ndarray:
    return frame["truth_label"].notna().to_numpy()


def truth_ranks(frame: pd.DataFrame) -> np.ndarray:
    """1-based rank of each turn's truth label among its suggested labels; 0 when absent or unlabelled."""
    ranks = np.zeros(len(frame), dtype=np.int64)
    for i, (truth, labels) in enumerate(zip(frame["truth_label"], frame["suggested_labels"], strict=True)):
        if truth is None or (isinstance(truth, float) and math.isnan(truth)) or labels is None:
            continue
        for r, label in enumerate(labels, start=1):
            if label == truth:
                ranks[i] = r
                break
    return ranks


def _hit_at(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def hits(ranks: np.ndarray) -> np.ndarray:
        return ((ranks >= 1) & (ranks <= k)).astype(float)

    return hits


def _reciprocal(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)


def _of_ranks(of: Callable[[np.ndarray], np.ndarray]) -> TurnValues:
    def values(frame: pd.DataFrame, embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
        return of(truth_ranks(frame)), _labelled(frame)

    return values


def semantic_hits(
    truth_texts: Sequence[str], suggested_texts: Sequence[Sequence[str]], embedder: Embedder, k: int,
    threshold: float = SEMANTIC_THRESHOLD,
) -> np.ndarray:
    """1.0 where one of the first ``k`` suggested texts has cosine >= ``threshold`` with the truth text."""
    unique = list(dict.fromkeys([*truth_texts, *(t for texts in suggested_texts for t in list(texts)[:k])]))
    if not truth_texts:
        return np.zeros(0)
    vectors = embedder.encode(unique)
    row = {text: i for i, text in enumerate(unique)}
    hits = np.zeros(len(truth_texts))
    for i, (truth, texts) in enumerate(zip(truth_texts, suggested_texts, strict=True)):
        picked = [row[t] for t in list(texts)[:k]]
        if picked and float(np.max(vectors[picked] @ vectors[row[truth]])) >= threshold - 1e-6:
            hits[i] = 1.0
    return hits


def _semantic(k: int) -> TurnValues:
    def values(frame: pd.DataFrame, embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
        if embedder is None:
            raise ValueError(f"semantic@{k} needs an embedder (copilot.strategies.embeddings.Embedder)")
        mask = ~_labelled(frame)
        out = np.zeros(len(frame))
        idx = np.flatnonzero(mask)
        out[idx] = semantic_hits([frame["truth_text"].iloc[i] for i in idx],
                                 [frame["suggested_texts"].iloc[i] for i in idx], embedder, k)
        return out, mask

    return values


def _coverage(frame: pd.DataFrame, embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
    return _suggested(frame).astype(float), np.ones(len(frame), bool)


def _suggested(frame: pd.DataFrame) -> np.ndarray:
    """Whether each turn got at least one suggestion."""
    return np.array([len(t) > 0 for t in frame["suggested_texts"]], dtype=bool)


def _precision_at_1(frame: pd.DataFrame, embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
    return _hit_at(1)(truth_ranks(frame)), _labelled(frame) & _suggested(frame)


def _column(name: str) -> TurnValues:
    def values(frame: pd.DataFrame, embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
        return frame[name].to_numpy(dtype=float), np.ones(len(frame), bool)

    return values


for _k in (1, 3, 5):
    register_metric(Metric(f"recall@{_k}", True, _of_ranks(_hit_at(_k)), from_ranks=_hit_at(_k),
                           description=f"labelled turns whose truth label is in the top {_k}"))
register_metric(Metric("mrr", True, _of_ranks(_reciprocal), from_ranks=_reciprocal,
                       description="labelled turns: mean of 1/rank of the truth label (0 if absent)"))
for _k in (1, 3):
    register_metric(Metric(f"semantic@{_k}", True, _semantic(_k), needs_embedder=True,
                           description=f"free-typed turns: a top-{_k} text with MiniLM cosine >= "
                                       f"{SEMANTIC_THRESHOLD} to the truth"))
register_metric(Metric("coverage", True, _coverage, description="turns with at least one suggestion"))
register_metric(Metric("precision@1", True, _precision_at_1,
                       description="labelled turns that got a suggestion: the first one is the truth label"))
register_metric(Metric("latency_p50", False, _column("latency_ms"), reduce="p50", description="median ms per turn"))
register_metric(Metric("latency_p95", False, _column("latency_ms"), reduce="p95", description="95th percentile ms"))
register_metric(Metric("tokens", False, _column("tokens"), description="mean LLM tokens per turn"))


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap by conversation


def _conversation_codes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's conversation as a number, in sorted order of (chatbot, conversation): the same conversations get
    the same draws whatever the row order, so a replay's table and an offline one give the same intervals."""
    keys = frame["chatbot"].astype(str) + "\0" + frame["conversation_id"].astype(str)
    codes, _ = pd.factorize(keys, sort=True)
    return np.asarray(codes, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def bootstrap_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` x ``n_groups`` counts: how often each conversation is drawn in each resample (seeded).

    The same draws serve every metric of a table (cached, read-only), so the metrics' intervals are coherent.
    """
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)
    weights.setflags(write=False)
    return weights


def ratio_interval(
    sums: np.ndarray, counts: np.ndarray, *, n_boot: int, seed: int, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Point estimate sum(sums)/sum(counts) and its percentile bootstrap interval over groups (conversations).

    Args:
        sums: per-conversation sum of the turn values.
        counts: per-conversation number of counted turns.
    """
    total = counts.sum()
    if total == 0:
        return math.nan, math.nan, math.nan
    point = float(sums.sum() / total)
    if n_boot <= 0:
        return point, math.nan, math.nan
    weights = bootstrap_weights(len(sums), n_boot, seed)
    num, den = weights @ sums, weights @ counts
    boots = num[den > 0] / den[den > 0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    return point, float(low), float(high)


def _reduce(
    metric: Metric, values: np.ndarray, mask: np.ndarray, codes: np.ndarray, *, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """(value, low, high) from per-turn values, the counted-turn mask and each turn's conversation code."""
    if metric.reduce != "mean":
        picked = values[mask]
        q = {"p50": 50, "p95": 95}[metric.reduce]
        return (float(np.percentile(picked, q)) if len(picked) else math.nan), math.nan, math.nan
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    sums = np.bincount(codes, weights=np.where(mask, values, 0.0), minlength=n_groups)
    counts = np.bincount(codes, weights=mask.astype(float), minlength=n_groups)
    return ratio_interval(sums, counts, n_boot=n_boot, seed=seed)


def metric_value(
    frame: pd.DataFrame, name: str, *, n_boot: int = 1000, seed: int = 0, embedder: Embedder | None = None,
) -> tuple[float, float, float]:
    """(value, low, high) of one metric over the table (one strategy's rows); percentiles get no interval."""
    metric = METRICS.get(name)
    values, mask = metric.turn_values(frame, embedder)
    return _reduce(metric, values, mask, _conversation_codes(frame), n_boot=n_boot, seed=seed)


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _turn_arrays(
    frame: pd.DataFrame, metrics: Sequence[str], embedder: Embedder | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-turn values and masks of every metric, computed once for a strategy's rows (ranks computed once)."""
    ranks = truth_ranks(frame)
    labelled = _labelled(frame)
    out = {}
    for name in metrics:
        metric = METRICS.get(name)
        if metric.from_ranks is not None:
            out[name] = (metric.from_ranks(ranks), labelled)
        else:
            out[name] = metric.turn_values(frame, embedder)
    return out


def _scores(
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], labelled: np.ndarray, codes: np.ndarray, *,
    n_boot: int, seed: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (values, mask) in arrays.items():
        metric = METRICS.get(name)
        value, low, high = _reduce(metric, values, mask, codes, n_boot=n_boot, seed=seed)
        out[name] = _clean(value)
        if metric.reduce == "mean":
            out[f"{name}_low"], out[f"{name}_high"] = _clean(low), _clean(high)
    out["n_turns"] = int(labelled.sum())
    out["n_free_turns"] = len(labelled) - int(labelled.sum())
    out["n_conversations"] = int(codes.max()) + 1 if len(codes) else 0
    return out


def score(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, *, n_boot: int = 1000, seed: int = 0,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Every metric of one strategy's rows: ``{metric: v, metric_low: l, metric_high: h, ..., n_turns: n}``.

    ``n_turns`` counts the labelled turns (the recall denominator); ``n_free_turns`` the free-typed ones,
    ``n_conversations`` the conversations. NaN (nothing to count) is written as None.
    """
    arrays = _turn_arrays(frame, metrics, embedder)
    return _scores(arrays, _labelled(frame), _conversation_codes(frame), n_boot=n_boot, seed=seed)


def summarize(
    frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, metrics: Sequence[str] | None = None,
    embedder: Embedder | None = None,
) -> dict[str, dict[str, Any]]:
    """Scores of every strategy in the table, overall and per chatbot.

    Returns ``{"overall": {strategy: scores}, "per_chatbot": {chatbot: {strategy: scores}}}`` where ``scores`` is
    what :func:`score` returns. ``metrics`` defaults to :data:`DEFAULT_METRICS`, plus ``semantic@1``/``semantic@3``
    when an ``embedder`` is given. Depends only on the table.

    Each strategy's per-turn values are computed once; overall and per-chatbot scores reduce slices of them.
    """
    if metrics is None:
        metrics = (*DEFAULT_METRICS, "semantic@1", "semantic@3") if embedder is not None else DEFAULT_METRICS
    overall: dict[str, Any] = {}
    per_chatbot: dict[str, dict[str, Any]] = {}
    for strategy, rows in frame.groupby("strategy", sort=False):
        arrays = _turn_arrays(rows, metrics, embedder)
        labelled = _labelled(rows)
        codes = _conversation_codes(rows)
        overall[str(strategy)] = _scores(arrays, labelled, codes, n_boot=n_boot, seed=seed)
        bots = rows["chatbot"].astype(str).to_numpy()
        for chatbot in sorted(set(bots)):
            idx = np.flatnonzero(bots == chatbot)
            sub_codes = np.unique(codes[idx], return_inverse=True)[1].astype(np.int64)
            per_chatbot.setdefault(chatbot, {})[str(strategy)] = _scores(
                {m: (v[idx], k[idx]) for m, (v, k) in arrays.items()}, labelled[idx], sub_codes,
                n_boot=n_boot, seed=seed)
    return {"overall": overall, "per_chatbot": dict(sorted(per_chatbot.items()))}


# ---------------------------------------------------------------------------------------------------------------
# Paired comparison and the champion rule


@dataclass(frozen=True)
class Paired:
    """Mean difference (b − a) of a metric on the same turns, with its bootstrap-by-conversation interval."""

    diff: float
    low: float
    high: float
    n_turns: int
    n_conversations: int


def paired_interval(
    champion: Sequence[float] | np.ndarray, challenger: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray, *, n_boot: int = 1000, seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Paired:
    """The interval of mean(challenger − champion) over aligned per-turn values, resampling the ``groups``
    (conversations)."""
    a, b = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    if a.shape != b.shape or len(a) != len(groups):
        raise ValueError("paired values must be aligned: same turns, same length")
    codes, _ = pd.factorize(pd.Series(list(groups), dtype=object))
    codes = np.asarray(codes, dtype=np.int64)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    sums = np.bincount(codes, weights=b - a, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    diff, low, high = ratio_interval(sums, counts, n_boot=n_boot, seed=seed, confidence=confidence)
    return Paired(diff, low, high, len(a), n_groups)


def ratio_difference_interval(
    num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray, *, n_boot: int = 1000,
    seed: int = 0, confidence: float = CONFIDENCE,
) -> Paired:
    """sum(num_b)/sum(den_b) − sum(num_a)/sum(den_a) and its bootstrap interval, the four arrays per-conversation
    sums over the same conversations (one draw of conversations serves both ratios, so the difference is paired).

    For a ratio metric whose counted turns differ between a and b, e.g. precision@1 with and without a trigger
    threshold (a threshold removes turns from the denominator). Draws where either denominator is 0 are left out.
    ``n_turns`` is sum(den_a).
    """
    arrays = [np.asarray(x, dtype=float) for x in (num_a, den_a, num_b, den_b)]
    if len({len(x) for x in arrays}) != 1:
        raise ValueError("per-conversation sums must be aligned: same conversations, same length")
    num_a, den_a, num_b, den_b = arrays
    n_groups = len(num_a)
    if den_a.sum() == 0 or den_b.sum() == 0:
        return Paired(math.nan, math.nan, math.nan, int(den_a.sum()), n_groups)
    diff = float(num_b.sum() / den_b.sum() - num_a.sum() / den_a.sum())
    if n_boot <= 0:
        return Paired(diff, math.nan, math.nan, int(den_a.sum()), n_groups)
    weights = bootstrap_weights(n_groups, n_boot, seed)
    da, db = weights @ den_a, weights @ den_b
    ok = (da > 0) & (db > 0)
    boots = (weights @ num_b)[ok] / db[ok] - (weights @ num_a)[ok] / da[ok]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    return Paired(diff, float(low), float(high), int(den_a.sum()), n_groups)


def paired_comparison(
    frame_a: pd.DataFrame, frame_b: pd.DataFrame, metric: str = "recall@1", *, n_boot: int = 1000, seed: int = 0,
    embedder: Embedder | None = None,
) -> Paired:
    """Strategy b minus strategy a on the turns both scored (matched by chatbot, conversation, turn index) and
    that the metric counts; the interval resamples conversations."""
    spec = METRICS.get(metric)
    if spec.reduce != "mean":
        raise ValueError(f"{metric} is a percentile: no paired comparison")
    keys = ["chatbot", "conversation_id", "turn_index"]
    merged = frame_a.merge(frame_b, on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    columns = [c for c in frame_a.columns if c in frame_b.columns and c not in (*keys, "strategy")]
    values = {}
    for side in ("a", "b"):
        part = merged[keys + [f"{c}_{side}" for c in columns]]
        part.columns = keys + columns
        values[side] = spec.turn_values(part, embedder)
    mask = values["a"][1] & values["b"][1]
    groups = (merged["chatbot"].astype(str) + "\0" + merged["conversation_id"].astype(str)).to_numpy()[mask]
    return paired_interval(values["a"][0][mask], values["b"][0][mask], groups, n_boot=n_boot, seed=seed)


@dataclass(frozen=True)
class Decision:
    """Outcome of the champion rule (:func:`decide_winner`): whether the challenger replaces the champion, the
    paired interval, and why."""

    switch: bool
    paired: Paired
    reason: str


def decide_winner(
    champion_scores: Sequence[float] | np.ndarray, challenger_scores: Sequence[float] | np.ndarray,
    conversations: Sequence[Any] | np.ndarray, *, higher_is_better: bool = True, n_boot: int = 1000, seed: int = 0,
) -> Decision:
    """The champion rule: the challenger replaces the champion only when the paired bootstrap interval of
    (challenger − champion), resampled by conversation, lies strictly on the better side of 0.

    Args:
        champion_scores, challenger_scores: per-turn metric values on the same turns, aligned.
        conversations: the conversation of each turn (the resampling unit).
        higher_is_better: the metric's direction (:attr:`Metric.higher_is_better`).
    """
    paired = paired_interval(champion_scores, challenger_scores, conversations, n_boot=n_boot, seed=seed)
    return decision_from_interval(paired, higher_is_better=higher_is_better)


def decision_from_interval(paired: Paired, *, higher_is_better: bool = True) -> Decision:
    """The champion rule on an interval already computed: switch only when it lies strictly on the better side
    of 0 (and the mean difference too). :func:`decide_winner` for aligned per-turn values; the per-chatbot
    threshold of :mod:`copilot.evaluation.tuning` for a difference of ratios (:func:`ratio_difference_interval`)."""
    if math.isnan(paired.diff) or math.isnan(paired.low):
        return Decision(False, paired, "keep: no turns to compare")
    better = paired.low > 0 and paired.diff > 0 if higher_is_better else paired.high < 0 and paired.diff < 0
    interval = f"diff {paired.diff:+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"
    if better:
        return Decision(True, paired, f"switch: {interval} excludes 0")
    worse = paired.high < 0 if higher_is_better else paired.low > 0
    if worse:
        return Decision(False, paired, f"keep: challenger worse, {interval}")
    return Decision(False, paired, f"keep: {interval} contains 0")


def turn_scores(frame: pd.DataFrame, metric: str, embedder: Embedder | None = None) -> pd.DataFrame:
    """Per-turn values of ``metric`` on the turns it counts: columns chatbot, conversation_id, turn_index, value."""
    values, mask = METRICS.get(metric).turn_values(frame, embedder)
    out = frame.loc[mask, ["chatbot", "conversation_id", "turn_index"]].copy()
    out["value"] = values[mask]
    return out.reset_index(drop=True)


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric).higher_is_better


def metric_names() -> list[str]:
    return METRICS.names()


def as_mapping(paired: Paired) -> Mapping[str, float | int | None]:
    return {"diff": _clean(paired.diff), "low": _clean(paired.low), "high": _clean(paired.high),
            "n_turns": paired.n_turns, "n_conversations": paired.n_conversations}
