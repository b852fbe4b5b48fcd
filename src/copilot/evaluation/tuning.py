"""Per-chatbot tuning with the champion rule: search each strategy's grid on dev, keep the global strategy unless a
challenger is better with a paired interval that excludes 0.

1. Every grid point of every strategy of the task is fitted once on train (all chatbots at once; strategies keep
   per-chatbot state where they need it) and predicts every agent turn of dev.
2. The global strategy is the candidate with the best selection metric over all chatbots' dev turns together.
3. Per chatbot, each strategy's best grid point on that chatbot's dev turns is a challenger. The champion starts as
   the global strategy; challengers are tried best first, each against the current champion with
   :func:`copilot.evaluation.metrics.decide_winner` (paired bootstrap by conversation on that chatbot's dev turns):
   it takes over only when the interval of (challenger − champion) lies strictly on the better side of 0.

4. The knobs (:func:`tune_knobs`, the task's ``knobs:``), per chatbot on top of its champion from step 3, computed
   post hoc from the candidates' dev predictions and their scores with the same function the strategy serves with
   (:func:`copilot.strategies.adapted.fuse`):

   - blend: the partner is the task's named one (``knobs.partner``: that strategy's best candidate over all
     chatbots) or the chatbot's best candidate of another family; each weight is a challenger against the current
     champion under the same rule as step 3, kept only when it switches;
   - threshold (when ``knobs.precision_target`` is set): the smallest threshold on the dev top scores whose
     precision@1 reaches the target, kept only when coverage stays at least ``knobs.min_coverage`` and the
     precision@1 gain over no threshold has a bootstrap interval by conversation above 0.

   Chatbots that share a champion share ONE ``Champion("adapted", {base, partners, per_chatbot, depth})`` holding
   every such chatbot's kept knobs (chatbots without knobs get exactly the base's answer), so evaluation and
   export fit the base once; a champion under which no chatbot kept a knob stays the plain candidate.

A champion only changes for a better mean on its chatbot's turns, so the champions together are never worse
than the global strategy on dev, except where a threshold was kept: it trades recall@1 (a hidden suggestion is a
miss) for precision@1. ``tuning.json`` keeps every candidate's scores, each decision and its reason, and every knob
tried per chatbot.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from copilot._io import git_commit, write_json
from copilot.data.predictions import prediction_row, predictions_frame, row_suggestions
from copilot.evaluation.metrics import (
    METRICS,
    Paired,
    as_mapping,
    decide_winner,
    decision_from_interval,
    paired_interval,
    ratio_difference_interval,
    score,
    truth_ranks,
)
from copilot.evaluation.runs import (
    CHAMPIONS,
    GLOBAL,
    EvaluationTracker,
    as_dataset,
    data_file,
    data_tags,
    predict,
)
from copilot.evaluation.tasks import Champion, KnobSettings, Task, write_tuned_task
from copilot.strategies import make_strategy
from copilot.strategies.adapted import Knobs, confidence, fuse
from copilot.strategies.embeddings import EmbeddingCache


@dataclass(frozen=True)
class Candidate:
    """One grid point of one strategy of the task."""

    key: str  # describe(): the candidate's id in the predictions and reports
    strategy_id: str  # the task's strategy entry
    name: str  # the family
    params: Mapping[str, Any]

    def champion(self) -> Champion:
        return Champion(self.name, dict(self.params))


@dataclass(frozen=True)
class KeptKnobs:
    """The knobs one chatbot kept: a blend with a partner candidate and/or a threshold."""

    partner: Candidate | None = None
    blend: float = 0.0
    threshold: float | None = None


@dataclass
class KnobsResult:
    """What :func:`tune_knobs` found: each chatbot's final champion (``adapted`` where knobs were kept under its
    champion), the knobs kept, the report per chatbot and the final dev predictions (strategy ``champions``)."""

    champions: dict[str, Champion]
    kept: dict[str, KeptKnobs]
    report: dict[str, dict[str, Any]]
    predictions: pd.DataFrame = field(repr=False)


@dataclass
class TuningResult:
    """What :func:`tune` found. ``report`` is what ``tuning.json`` holds. ``champions`` are the candidates of step 3
    (the family champions); ``final`` what each chatbot serves: the champion with its knobs (step 4)."""

    task: Task
    selection_metric: str
    global_candidate: Candidate
    champions: dict[str, Candidate]
    report: dict[str, Any]
    leaderboard: pd.DataFrame
    predictions: pd.DataFrame = field(repr=False)
    final: dict[str, Champion] = field(default_factory=dict)
    knobs: dict[str, KeptKnobs] = field(default_factory=dict)

    def champion_settings(self) -> dict[str, Champion]:
        """Each chatbot's champion as evaluate and export build it (with its knobs, when it kept some)."""
        return {bot: self.final.get(bot) or c.champion() for bot, c in self.champions.items()}

    def write_task(self, path: str | os.PathLike[str]) -> Path:
        """The tuned task file: includes the task's file and adds ``champions:``."""
        counts = pd.Series([c.key for c in self.champions.values()]).value_counts()
        note = (f"global on dev: {self.global_candidate.key}\n"
                + "\n".join(f"{n} chatbot(s): {key}" for key, n in counts.items())
                + (f"\nknobs kept (per-chatbot blend or threshold, an adapted champion): "
                   f"{', '.join(sorted(self.knobs))}" if self.knobs else "\nno chatbot kept a knob"))
        return write_tuned_task(self.task, self.champion_settings(), path, note=note,
                                global_strategy=self.global_candidate.champion())


def _aligned(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-turn values of ``metric`` for every candidate on the turns it counts: rows are turns
    (chatbot, conversation_id, turn_index), columns candidates."""
    values, mask = METRICS.get(metric).turn_values(frame, None)
    part = frame.loc[mask, ["strategy", "chatbot", "conversation_id", "turn_index"]].copy()
    part["value"] = values[mask]
    return part.pivot_table(index=["chatbot", "conversation_id", "turn_index"], columns="strategy",
                            values="value", aggfunc="first", sort=True)


REPORT_METRICS = ("recall@1", "recall@3", "mrr", "coverage", "precision@1")
ADAPTED = "adapted"


def _better(a: float | None, b: float | None, higher: bool) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and np.isnan(b)):
        return True
    return a > b if higher else a < b


def tune(
    task: Task, *, train: Any, dev: Any, out_dir: str | os.PathLike[str],
    tracker: EvaluationTracker | None = None, progress: bool = True, embedding_cache: EmbeddingCache | None = None,
) -> TuningResult:
    """Search every strategy's grid on dev per chatbot and pick each chatbot's champion: a challenger
    replaces the global strategy only if its paired interval on that chatbot's dev turns excludes 0.

    Writes ``tuning.json`` (per chatbot: every candidate's scores with intervals, each strategy's best, the
    decisions against the champion with their paired intervals, the champion and why; the global strategy and
    the champions' combined dev score against it) and ``leaderboard.csv`` (one row per chatbot and candidate,
    plus ``overall``) into ``out_dir``. Sentence vectors are kept in ``embedding_cache`` (None: in memory).
    """
    say: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    metric = task.selection_metric
    higher = METRICS.get(metric).higher_is_better
    report_metrics = list(dict.fromkeys([metric, *REPORT_METRICS]))
    train_ds, dev_ds = task.restrict(as_dataset(train)), task.restrict(as_dataset(dev))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    candidates: list[Candidate] = []
    frames = []
    started = time.perf_counter()
    for spec in task.strategies:
        for params in spec.grid_points() or [dict(spec.params)]:
            strategy = make_strategy(spec.name, params).use_embedding_cache(embedding_cache)
            key = strategy.describe()
            if any(c.key == key for c in candidates):  # the same setting reached by two entries: fit once
                continue
            start = time.perf_counter()
            strategy.fit(train_ds)
            candidates.append(Candidate(key, spec.id, spec.name, strategy.get_params()))
            frames.append(predict(strategy, dev_ds, strategy_id=key, k=task.k))
            say(f"{key}: {time.perf_counter() - start:.1f}s")
    if not candidates:
        raise ValueError(f"task {task.name} has no strategies to tune")
    frame = pd.concat(frames, ignore_index=True)
    by_key = {c.key: c for c in candidates}
    search_s = time.perf_counter() - started

    # scores of every candidate, overall and per chatbot
    overall = {c.key: score(frame[frame["strategy"] == c.key], report_metrics, n_boot=task.n_boot, seed=task.seed)
               for c in candidates}
    per_bot: dict[str, dict[str, dict[str, Any]]] = {}
    for (bot, key), rows in frame.groupby(["chatbot", "strategy"], sort=True):
        per_bot.setdefault(str(bot), {})[str(key)] = score(rows, report_metrics, n_boot=task.n_boot, seed=task.seed)

    global_c = candidates[0]
    for c in candidates[1:]:
        if _better(overall[c.key][metric], overall[global_c.key][metric], higher):
            global_c = c
    say(f"global on dev: {global_c.key} ({metric} {overall[global_c.key][metric]})")

    aligned = _aligned(frame, metric)
    champions: dict[str, Candidate] = {}
    bots_report: dict[str, Any] = {}
    for bot in sorted(per_bot):  # every chatbot with dev turns
        scores = per_bot[bot]
        best_of: dict[str, str] = {}
        for c in candidates:
            if c.key not in scores:
                continue
            current = best_of.get(c.strategy_id)
            if current is None or _better(scores[c.key][metric], scores[current][metric], higher):
                best_of[c.strategy_id] = c.key
        challengers = sorted(best_of.values(), key=lambda k: scores[k][metric] if scores[k][metric] is not None
                             else (-np.inf if higher else np.inf), reverse=higher)
        champion = global_c
        decisions = []
        table = aligned.loc[bot] if bot in aligned.index.get_level_values(0) else None
        for key in challengers:
            if key == champion.key:
                continue
            if table is None or table.empty:
                decisions.append({"challenger": key, "against": champion.key, "switch": False,
                                  "reason": f"keep: no turns that {metric} counts"})
                continue
            pair = table[[champion.key, key]].dropna()  # the turns both count (all labelled turns for recall)
            groups = pair.index.get_level_values("conversation_id").to_numpy()
            decision = decide_winner(pair[champion.key].to_numpy(), pair[key].to_numpy(), groups,
                                     higher_is_better=higher, n_boot=task.n_boot, seed=task.seed)
            decisions.append({"challenger": key, "against": champion.key, "switch": decision.switch,
                              "paired": as_mapping(decision.paired), "reason": decision.reason})
            if decision.switch:
                champion = by_key[key]
        champions[bot] = champion
        why = next((d["reason"] for d in reversed(decisions) if d["switch"]), None)
        bots_report[bot] = {
            "candidates": scores,
            "best_of_strategy": best_of,
            "decisions": decisions,
            "champion": {"candidate": champion.key, **champion.champion().as_dict(),
                         "is_global": champion.key == global_c.key,
                         "why": why or "the global strategy: no challenger's paired interval excluded 0"},
        }

    # a chatbot with train data but no dev turns has nothing to challenge the global strategy with
    for bot in train_ds.chatbot_ids():
        if bot not in champions:
            champions[bot] = global_c
            bots_report[bot] = {"candidates": {}, "best_of_strategy": {}, "decisions": [],
                                "champion": {"candidate": global_c.key, **global_c.champion().as_dict(),
                                             "is_global": True, "why": "no dev turns: the global strategy"}}
    knobs = tune_knobs(frame, candidates, champions, per_bot, overall, task.knobs, metric=metric, k=task.k,
                       n_boot=task.n_boot, seed=task.seed)
    for bot, entry in knobs.report.items():
        bots_report[bot]["knobs"] = entry
        bots_report[bot]["family_champion"] = bots_report[bot]["champion"]["candidate"]
        final = knobs.champions[bot]
        if final.strategy == ADAPTED:
            bots_report[bot]["champion"] = {
                "candidate": f"{ADAPTED}({champions[bot].key})", **final.as_dict(), "is_global": False,
                "why": (f"{bots_report[bot]['champion']['why']}; with its knobs ({entry['summary']})"
                        if bot in knobs.kept else
                        f"{bots_report[bot]['champion']['why']}; the adapted setting it shares with the chatbots "
                        f"that kept knobs, which answers it exactly as its champion ({entry['summary']})")}
    say(f"knobs kept on dev: {', '.join(sorted(knobs.kept)) or 'none'}")
    scoring_s = time.perf_counter() - started - search_s

    # the champions together (with their knobs) against the global strategy on dev
    combo = knobs.predictions
    combo_scores = score(combo, report_metrics, n_boot=task.n_boot, seed=task.seed)
    both = pd.concat([aligned[global_c.key], _aligned(combo, metric)[CHAMPIONS]], axis=1,
                     keys=["global", CHAMPIONS]).dropna()
    vs_global: Paired = paired_interval(both["global"].to_numpy(), both[CHAMPIONS].to_numpy(),
                                        [f"{b}\0{c}" for b, c, _ in both.index], n_boot=task.n_boot,
                                        seed=task.seed)
    report = {
        "task": task.name, "task_path": str(task.path) if task.path else None, "selection_metric": metric,
        "higher_is_better": higher, "n_boot": task.n_boot, "seed": task.seed, "commit": git_commit(),
        **data_tags(train, "train"), **data_tags(dev, "dev"), "search_seconds": round(search_s, 2),
        "scoring_seconds": round(scoring_s, 2),
        "candidates": [{"candidate": c.key, "strategy_id": c.strategy_id, "strategy": c.name,
                        "params": dict(c.params)} for c in candidates],
        GLOBAL: {"candidate": global_c.key, **global_c.champion().as_dict(), "dev": overall[global_c.key]},
        "overall": overall,
        CHAMPIONS: {"dev": combo_scores, "vs_global": as_mapping(vs_global)},
        "knobs": {"settings": {"blend": list(task.knobs.blend), "partner": task.knobs.partner,
                               "precision_target": task.knobs.precision_target,
                               "min_coverage": task.knobs.min_coverage, "depth": task.k},
                  "kept": {bot: knobs.report[bot]["kept"] for bot in sorted(knobs.kept)},
                  "none_kept": {bot: entry["summary"] for bot, entry in sorted(knobs.report.items())
                                if bot not in knobs.kept}},
        "per_chatbot": bots_report,
    }
    write_json(out / "tuning.json", json.loads(json.dumps(report, default=str)), allow_nan=False)

    rows = []
    for bot, scores_of in [("overall", overall), *((b, per_bot[b]) for b in sorted(per_bot))]:
        for key, s in scores_of.items():
            c = by_key[key]
            rows.append({"chatbot": bot, "candidate": key, "strategy_id": c.strategy_id, "strategy": c.name,
                         "params": json.dumps(dict(c.params), sort_keys=True, default=str),
                         metric: s[metric], f"{metric}_low": s.get(f"{metric}_low"),
                         f"{metric}_high": s.get(f"{metric}_high"),
                         **{m: s[m] for m in report_metrics if m != metric}, "n_turns": s["n_turns"],
                         "is_global": key == global_c.key,
                         "is_champion": bot != "overall" and champions[bot].key == key})
    rows.append({"chatbot": "overall", "candidate": CHAMPIONS, "strategy_id": CHAMPIONS, "strategy": CHAMPIONS,
                 "params": "", metric: combo_scores[metric], f"{metric}_low": combo_scores.get(f"{metric}_low"),
                 f"{metric}_high": combo_scores.get(f"{metric}_high"),
                 **{m: combo_scores[m] for m in report_metrics if m != metric}, "n_turns": combo_scores["n_turns"],
                 "is_global": False, "is_champion": False})
    board = pd.DataFrame(rows)
    board = board.sort_values(["chatbot", metric], ascending=[True, not higher], kind="stable", ignore_index=True)
    board.to_csv(out / "leaderboard.csv", index=False)

    if tracker is not None:
        tags = {f"copilot.{k}": str(v) for k, v in report.items() if k.endswith(("_path", "_sha256"))}
        tracker.log_evaluation(frame, {"overall": overall, "per_chatbot": per_bot},
                               {c.key: {"strategy": c.name, **c.params} for c in candidates},
                               data_path=data_file(dev), stage="tune", tags={"copilot.task": task.name, **tags})
    say(f"champions on dev: {metric} {combo_scores[metric]} vs global {overall[global_c.key][metric]} "
        f"(diff {vs_global.diff:+.4f} [{vs_global.low:+.4f}, {vs_global.high:+.4f}])")
    return TuningResult(task, metric, global_c, champions, report, board, frame, knobs.champions, knobs.kept)


# ---------------------------------------------------------------------------------------------------------------
# Step 4: per-chatbot knobs on top of each champion


def _pairs(base_rows: pd.DataFrame, partner_rows: pd.DataFrame | None
           ) -> list[tuple[dict[str, Any], list[Any], list[Any], dict[str, Any] | None]]:
    """Each base row with its suggestions and the partner's on the same turn (none when it has no row there)."""
    partner_by_turn: dict[tuple[str, int], dict[str, Any]] = {}
    if partner_rows is not None:
        for row in partner_rows.to_dict("records"):
            partner_by_turn[(str(row["conversation_id"]), int(row["turn_index"]))] = row
    out = []
    for row in base_rows.to_dict("records"):
        other = partner_by_turn.get((str(row["conversation_id"]), int(row["turn_index"])))
        out.append((row, row_suggestions(row), row_suggestions(other) if other is not None else [], other))
    return out


def knob_predictions(base_rows: pd.DataFrame, partner_rows: pd.DataFrame | None, *, blend: float = 0.0,
                     threshold: float | None = None, k: int, strategy: str = CHAMPIONS) -> pd.DataFrame:
    """The predictions one chatbot's knobs give, computed turn by turn from its base's and partner's predictions
    (with their ``suggested_scores``) by :func:`copilot.strategies.adapted.fuse`, what the adapted strategy serves.
    Rows in the base's order; latency and tokens are the members' sums (the base's alone without a blend)."""
    rows = []
    for row, base, partner, other in _pairs(base_rows, partner_rows if blend > 0 else None):
        items = fuse(base, partner, blend=blend, threshold=threshold, k=k)
        rows.append(prediction_row(
            strategy=strategy, chatbot=row["chatbot"], conversation_id=row["conversation_id"],
            turn_index=row["turn_index"], truth_label=row["truth_label"], truth_text=row["truth_text"],
            suggestions=items, latency_ms=row["latency_ms"] + (other["latency_ms"] if other is not None else 0.0),
            tokens=int(row["tokens"]) + (int(other["tokens"]) if other is not None else 0)))
    return predictions_frame(rows)


def _decide(current: pd.DataFrame, challenger: pd.DataFrame, metric: str, *, n_boot: int, seed: int) -> Any:
    """The champion rule between two predictions of the same turns in the same order (see :func:`knob_predictions`)."""
    spec = METRICS.get(metric)
    (a, mask_a), (b, mask_b) = spec.turn_values(current, None), spec.turn_values(challenger, None)
    mask = mask_a & mask_b
    return decide_winner(a[mask], b[mask], current["conversation_id"].to_numpy()[mask],
                         higher_is_better=spec.higher_is_better, n_boot=n_boot, seed=seed)


def _partner_of(bot: str, base: Candidate, candidates: Sequence[Candidate], per_bot: Mapping[str, Any],
                named: Candidate | None, settings: KnobSettings, metric: str) -> tuple[Candidate | None, str]:
    """The candidate a chatbot blends with, and why (or why none)."""
    scores = per_bot.get(bot, {})
    if settings.partner is not None:
        if named is None:
            return None, f"the task's partner {settings.partner!r} is not among the strategies of this run"
        if named.key == base.key:
            return None, "the task's partner is the champion itself"
        if named.key not in scores:
            return None, f"the task's partner has no dev predictions for {bot}"
        return named, f"named in the task (knobs.partner: {settings.partner}): its best candidate over all chatbots"
    higher = METRICS.get(metric).higher_is_better
    best: Candidate | None = None
    for c in candidates:
        if c.name != base.name and c.key in scores and (
                best is None or _better(scores[c.key][metric], scores[best.key][metric], higher)):
            best = c
    if best is None:
        return None, f"no candidate of another family than {base.name}"
    value = scores[best.key][metric]
    return best, f"the best candidate of another family on this chatbot's dev turns ({metric} {value})"


def _threshold(pairs: Sequence[tuple[dict[str, Any], list[Any], list[Any], dict[str, Any] | None]],
               current: pd.DataFrame, blend: float, settings: KnobSettings, *, n_boot: int,
               seed: int) -> dict[str, Any]:
    """The smallest threshold on the dev top scores (:func:`copilot.strategies.adapted.confidence`) whose
    precision@1 reaches the target, kept when coverage stays at least ``min_coverage`` and the precision@1 gain over
    no threshold has an interval (bootstrap by conversation) above 0. ``current`` is the predictions without it."""
    target, floor = settings.precision_target, settings.min_coverage
    assert target is not None
    conf = np.array([confidence(base, partner, blend=blend) for _, base, partner, _ in pairs], dtype=float)
    shown = np.array([len(t) > 0 for t in current["suggested_texts"]], dtype=bool)
    labelled = current["truth_label"].notna().to_numpy()
    hits = (truth_ranks(current) == 1) & labelled
    codes = pd.factorize(current["conversation_id"].astype(str))[0]
    n_groups = int(codes.max()) + 1 if len(codes) else 0

    def figures(keep: np.ndarray) -> dict[str, float | None]:
        counted = keep & labelled
        return {"precision@1": float(hits[counted].sum() / counted.sum()) if counted.any() else None,
                "coverage": float(keep.mean()) if len(keep) else None,
                "recall@1": float(hits[keep].sum() / labelled.sum()) if labelled.any() else None}

    without = figures(shown)
    out: dict[str, Any] = {"searched": True, "precision_target": target, "min_coverage": floor, "without": without,
                           "threshold": None, "with": None, "paired": None, "kept": False}
    if without["precision@1"] is None:
        return {**out, "reason": "no threshold: no labelled turn with a suggestion on dev"}
    if without["precision@1"] >= target:
        return {**out, "reason": f"no threshold: precision@1 is {without['precision@1']:.3f} without one, "
                                 f"already at the target {target}"}
    chosen, best = None, None
    for t in np.unique(conf[shown & labelled]):  # ascending: the first that reaches the target keeps the most
        found = figures(shown & (conf >= t))
        if best is None or (found["precision@1"] or 0.0) > (best[1]["precision@1"] or 0.0):
            best = (float(t), found)
        if found["precision@1"] is not None and found["precision@1"] >= target:
            chosen = (float(t), found)
            break
    if chosen is None:
        at = f" (at best {best[1]['precision@1']:.3f}, threshold {best[0]:.4f})" if best else ""
        return {**out, "reason": f"no threshold: none reaches precision@1 {target} on dev{at}"}
    t, found = chosen
    out.update(threshold=t, **{"with": found})
    if found["coverage"] is None or found["coverage"] < floor:
        return {**out, "reason": f"no threshold: precision@1 {target} needs threshold {t:.4f}, which leaves coverage "
                                 f"{found['coverage']:.3f} < min_coverage {floor}"}
    keep = shown & (conf >= t)

    def sums(mask: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=mask.astype(float), minlength=n_groups)

    gain = ratio_difference_interval(sums(hits & shown), sums(labelled & shown), sums(hits & keep),
                                     sums(labelled & keep), n_boot=n_boot, seed=seed)
    decision = decision_from_interval(gain, higher_is_better=True)
    out["paired"] = as_mapping(gain)
    if not decision.switch:
        return {**out, "reason": f"no threshold: the precision@1 gain at threshold {t:.4f}: "
                                 f"{decision.reason.removeprefix('keep: ')}"}
    return {**out, "kept": True,
            "reason": (f"threshold {t:.4f}: precision@1 {without['precision@1']:.3f} -> {found['precision@1']:.3f}, "
                       f"coverage {without['coverage']:.3f} -> {found['coverage']:.3f}, gain "
                       f"{decision.reason.removeprefix('switch: ')}")}


def _partner_names(partners: Sequence[Candidate]) -> dict[str, str]:
    """A short name per partner candidate (its task strategy id; numbered when one id has several grid points)."""
    distinct = list({c.key: c for c in partners}.values())
    out = {}
    for c in distinct:
        same = [d.key for d in distinct if d.strategy_id == c.strategy_id]
        out[c.key] = c.strategy_id if len(same) == 1 else f"{c.strategy_id}#{same.index(c.key) + 1}"
    return out


def tune_knobs(
    frame: pd.DataFrame, candidates: Sequence[Candidate], champions: Mapping[str, Candidate],
    per_bot: Mapping[str, Mapping[str, Any]], overall: Mapping[str, Mapping[str, Any]], settings: KnobSettings, *,
    metric: str, k: int, n_boot: int, seed: int,
) -> KnobsResult:
    """Step 4 of the module docstring: per chatbot, a blend and a threshold on top of its champion, from the
    candidates' dev predictions ``frame`` (with ``suggested_scores``, ``k`` deep); ``per_bot`` and ``overall``
    are the candidates' dev scores per chatbot and over all (what :func:`tune` computed).

    Returns each chatbot's final champion (chatbots sharing a champion share one ``adapted`` champion holding the
    knobs any of them kept, or the plain candidate when none did), the kept knobs, the report per chatbot (every
    knob tried, its dev scores, its decision and why) and the final dev predictions (strategy ``champions``).
    """
    higher = METRICS.get(metric).higher_is_better
    metrics = list(dict.fromkeys([metric, *REPORT_METRICS]))
    named = None
    if settings.partner is not None:
        for c in candidates:
            if c.strategy_id == settings.partner and (named is None or _better(
                    overall[c.key][metric], overall[named.key][metric], higher)):
                named = c
    kept: dict[str, KeptKnobs] = {}
    report: dict[str, dict[str, Any]] = {}
    finals = []
    for bot in sorted(champions):
        base = champions[bot]
        rows = frame[(frame["chatbot"] == bot) & (frame["strategy"] == base.key)]
        rows = rows.sort_values(["conversation_id", "turn_index"], kind="stable")
        if rows.empty:
            report[bot] = {"base": base.key, "blend": {"tried": [], "kept": None, "reason": "no dev turns"},
                           "threshold": {"searched": False, "reason": "no dev turns"}, "kept": None,
                           "summary": "none kept: no dev turns"}
            continue
        partner, partner_why = _partner_of(bot, base, candidates, per_bot, named, settings, metric)
        partner_rows = (None if partner is None
                        else frame[(frame["chatbot"] == bot) & (frame["strategy"] == partner.key)])
        current, current_name, blend = rows, base.key, 0.0
        tried: list[dict[str, Any]] = []
        if partner is None:
            blend_reason = f"no blend: {partner_why}"
        elif not settings.blend:
            blend_reason = "no blend: the task lists no blend weights"
        else:
            challengers = []
            for weight in settings.blend:
                fused = knob_predictions(rows, partner_rows, blend=weight, k=k, strategy=f"blend {weight}")
                challengers.append((weight, fused, score(fused, metrics, n_boot=n_boot, seed=seed)))
            challengers.sort(key=lambda c: c[2][metric] if c[2][metric] is not None
                             else (-np.inf if higher else np.inf), reverse=higher)
            for weight, fused, scores in challengers:
                decision = _decide(current, fused, metric, n_boot=n_boot, seed=seed)
                tried.append({"partner": partner.key, "blend": weight, "dev": scores, "against": current_name,
                              "switch": decision.switch, "paired": as_mapping(decision.paired),
                              "reason": decision.reason})
                if decision.switch:
                    current, current_name, blend = fused, f"blend {weight}", weight
            won = next((t["reason"] for t in reversed(tried) if t["switch"]), "")
            blend_reason = (f"blend {blend} with {partner.key}: {won}" if blend > 0
                            else "no blend: no weight's paired interval excluded 0")
        if settings.precision_target is None:
            threshold: dict[str, Any] = {"searched": False,
                                         "reason": "not searched: the task sets no knobs.precision_target"}
        else:
            pairs = _pairs(rows, partner_rows if blend > 0 else None)
            threshold = _threshold(pairs, current, blend, settings, n_boot=n_boot, seed=seed)
            if threshold["kept"]:
                current = knob_predictions(rows, partner_rows, blend=blend, threshold=threshold["threshold"], k=k)
        choice = KeptKnobs(partner if blend > 0 else None, blend,
                           threshold["threshold"] if threshold.get("kept") else None)
        if choice.blend > 0 or choice.threshold is not None:
            kept[bot] = choice
            parts = [f"blend {blend} with {partner.key}"] if choice.partner is not None and partner else []
            parts += [f"threshold {choice.threshold:.4f}"] if choice.threshold is not None else []
            summary = "; ".join(parts)
        else:
            summary = f"none kept: {blend_reason}; {threshold['reason']}"
        report[bot] = {
            "base": base.key,
            "blend": {"partner": partner.key if partner else None, "partner_why": partner_why, "tried": tried,
                      "kept": blend if blend > 0 else None, "reason": blend_reason},
            "threshold": threshold,
            "kept": ({"partner": choice.partner.key if choice.partner else None, "blend": choice.blend,
                      "threshold": choice.threshold} if bot in kept else None),
            "summary": summary,
            "dev": score(current, metrics, n_boot=n_boot, seed=seed),
        }
        finals.append(current.assign(strategy=CHAMPIONS))

    finished: dict[str, Champion] = {}
    by_base: dict[str, list[str]] = {}
    for bot, c in champions.items():
        by_base.setdefault(c.key, []).append(bot)
    for bots in by_base.values():
        base = champions[bots[0]]
        here = {bot: kept[bot] for bot in sorted(bots) if bot in kept}
        if not here:
            finished.update({bot: base.champion() for bot in bots})
            continue
        names = _partner_names([knob.partner for knob in here.values() if knob.partner is not None])
        by_name = {names[knob.partner.key]: knob.partner for knob in here.values() if knob.partner is not None}
        shared = Champion(ADAPTED, {
            "base": base.champion().as_dict(),
            "partners": {name: c.champion().as_dict() for name, c in sorted(by_name.items())},
            "per_chatbot": {bot: Knobs(names[knob.partner.key] if knob.partner else None, knob.blend,
                                       knob.threshold).as_dict() for bot, knob in here.items()},
            "depth": k,
        })
        finished.update({bot: shared for bot in bots})  # one setting: evaluate and export fit it once
        for bot, knob in here.items():
            if knob.partner is not None:
                assert report[bot]["kept"] is not None
                report[bot]["kept"]["partner_name"] = names[knob.partner.key]
    final_frame = pd.concat(finals, ignore_index=True) if finals else predictions_frame([]).assign(strategy=CHAMPIONS)
    return KnobsResult(finished, kept, report, final_frame)
