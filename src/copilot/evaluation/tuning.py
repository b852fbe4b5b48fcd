"""Per-chatbot tuning with the champion rule: search each strategy's grid on dev, keep the global strategy unless a
challenger is better with a paired interval that excludes 0.

1. Every grid point of every strategy of the task is fitted once on train (all chatbots at once; strategies keep
   per-chatbot state where they need it) and predicts every agent turn of dev.
2. The global strategy is the candidate with the best selection metric over all chatbots' dev turns together.
3. Per chatbot, each strategy's best grid point on that chatbot's dev turns is a challenger. The champion starts as
   the global strategy; challengers are tried best first, each against the current champion with
   :func:`copilot.evaluation.metrics.decide_winner` (paired bootstrap by conversation on that chatbot's dev turns):
   it takes over only when the interval of (challenger − champion) lies strictly on the better side of 0.

A champion only changes for a better mean on its chatbot's turns, so the champions together are never worse
than the global strategy on dev. ``tuning.json`` keeps every candidate's scores, each decision and its reason.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from copilot._io import git_commit, write_json
from copilot.evaluation.metrics import METRICS, Paired, as_mapping, decide_winner, paired_interval, score
from copilot.evaluation.runs import (
    CHAMPIONS,
    GLOBAL,
    EvaluationTracker,
    as_dataset,
    data_file,
    data_tags,
    predict,
)
from copilot.evaluation.tasks import Champion, Task, write_tuned_task
from copilot.strategies import make_strategy
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


@dataclass
class TuningResult:
    """What :func:`tune` found. ``report`` is what ``tuning.json`` holds."""

    task: Task
    selection_metric: str
    global_candidate: Candidate
    champions: dict[str, Candidate]
    report: dict[str, Any]
    leaderboard: pd.DataFrame
    predictions: pd.DataFrame = field(repr=False)

    def champion_settings(self) -> dict[str, Champion]:
        return {bot: c.champion() for bot, c in self.champions.items()}

    def write_task(self, path: str | os.PathLike[str]) -> Path:
        """The tuned task file: includes the task's file and adds ``champions:``."""
        counts = pd.Series([c.key for c in self.champions.values()]).value_counts()
        note = (f"global on dev: {self.global_candidate.key}\n"
                + "\n".join(f"{n} chatbot(s): {key}" for key, n in counts.items()))
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
    report_metrics = list(dict.fromkeys([metric, "recall@1", "recall@3", "mrr", "coverage"]))
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
            groups = table.index.get_level_values("conversation_id").to_numpy()
            decision = decide_winner(table[champion.key].to_numpy(), table[key].to_numpy(), groups,
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
    scoring_s = time.perf_counter() - started - search_s

    # the champions together against the global strategy on dev
    combo = pd.concat([frame[(frame["chatbot"] == bot) & (frame["strategy"] == c.key)]
                       for bot, c in champions.items() if bot in per_bot], ignore_index=True).assign(strategy=CHAMPIONS)
    combo_scores = score(combo, report_metrics, n_boot=task.n_boot, seed=task.seed)
    glob_values = aligned[global_c.key].to_numpy()
    champ_values = np.array([aligned.at[idx, champions[idx[0]].key] for idx in aligned.index], dtype=float)
    vs_global: Paired = paired_interval(glob_values, champ_values,
                                        [f"{b}\0{c}" for b, c, _ in aligned.index], n_boot=task.n_boot,
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
    return TuningResult(task, metric, global_c, champions, report, board, frame)
