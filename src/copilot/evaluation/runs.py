"""Offline evaluation: fit each strategy of a task on train, predict every agent turn of test, score it
with intervals.

:func:`predict` builds the per-turn predictions table (:mod:`copilot.data.predictions`) for one fitted strategy;
:func:`run` does it for every strategy of a :class:`~copilot.evaluation.tasks.Task` (and for the per-chatbot
champions when the task holds them), writes ``summary.json`` (:func:`copilot.evaluation.metrics.summarize`),
``predictions.parquet`` and ``run.json`` (what ran on which data at which commit), and prints a leaderboard.
The CLI (``copilot evaluate``), the notebooks and the tests call :func:`run`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from tqdm import tqdm

from copilot._io import file_sha256, git_commit, write_json
from copilot.data.context import contexts_for
from copilot.data.predictions import prediction_row, predictions_frame
from copilot.data.records import Dataset, load_dataset
from copilot.evaluation.metrics import METRICS, summarize
from copilot.evaluation.tasks import Champion, Task
from copilot.strategies import Strategy, make_strategy
from copilot.strategies.adapted import AdaptedStrategy
from copilot.strategies.embeddings import Embedder, EmbeddingCache

CHAMPIONS = "champions"
GLOBAL = "global"  # the tuned task's single strategy for every chatbot


class EvaluationTracker(Protocol):
    """What evaluation, tuning and replay ask of a tracker; :class:`copilot.serving.tracking.WorkbenchTracker` logs
    it to MLflow (one experiment per chatbot, one run per strategy and settings). One call per stage, at its end:

    - ``frame``: the predictions table of every strategy (:mod:`copilot.data.predictions`);
    - ``summary``: ``{"overall": {strategy: scores}, "per_chatbot": {chatbot: {strategy: scores}}}``;
    - ``params_by_strategy``: each strategy id's family and settings (``{"strategy": name, **settings}``);
    - ``data_path``: the scored dataset file (its SHA-256 becomes a tag), None when it was not a file;
    - ``stage``: ``"evaluate"``, ``"tune"`` or ``"replay"``; ``tags``: more tags (task, split, commit).
    """

    def log_evaluation(
        self, frame: pd.DataFrame, summary: Mapping[str, Any], params_by_strategy: Mapping[str, Mapping[str, Any]],
        *, data_path: str | os.PathLike[str] | None, stage: str, tags: Mapping[str, str] | None = None,
    ) -> list[str]: ...


def data_file(data: Any) -> str | None:
    """The path of a dataset given as a file, None for an in-memory Dataset."""
    return None if isinstance(data, Dataset) else str(data)


def _tokens(strategy: Strategy) -> int:
    return int(getattr(strategy, "tokens_", 0) or 0)


def predict(
    strategy: Strategy, data: Dataset, *, strategy_id: str | None = None, k: int = 5, progress: bool = False,
) -> pd.DataFrame:
    """The predictions table of a fitted strategy for every agent turn of every conversation in ``data``.

    One ``suggest_many`` call per conversation (its agent turns' contexts): latency is that call's wall time
    shared equally by its turns, tokens the growth of ``strategy.tokens_`` (LLM strategies) shared the same way.
    ``strategy_id`` defaults to ``strategy.describe()``.
    """
    sid = strategy_id or strategy.describe()
    rows = []
    conversations = data.conversations
    iterator: Any = conversations
    if progress:
        iterator = tqdm(conversations, desc=f"predict {sid}"[:60], unit="conv", file=sys.stderr, leave=False)
    for conv in iterator:
        pairs = list(contexts_for(conv))
        if not pairs:
            continue
        before = _tokens(strategy)
        start = time.perf_counter()
        answers = strategy.suggest_many([context for _, context in pairs], k)
        elapsed_ms = (time.perf_counter() - start) * 1000
        spent = _tokens(strategy) - before
        n = len(pairs)
        for j, ((index, _), suggestions) in enumerate(zip(pairs, answers, strict=True)):
            turn = conv.turns[index]
            rows.append(prediction_row(
                strategy=sid, chatbot=conv.chatbot, conversation_id=conv.conversation_id, turn_index=index,
                truth_label=turn.label, truth_text=turn.text, suggestions=list(suggestions)[:k],
                latency_ms=elapsed_ms / n, tokens=spent // n + (1 if j < spent % n else 0),
            ))
    return predictions_frame(rows)


def as_dataset(data: Dataset | str | os.PathLike[str]) -> Dataset:
    """``data`` itself, or the dataset file it names, loaded."""
    return data if isinstance(data, Dataset) else load_dataset(data)


def _key(name: str, params: Mapping[str, Any]) -> str:
    return json.dumps([name, dict(params)], sort_keys=True, default=str)


def champions_predictions(
    champions: Mapping[str, Champion], *, train: Dataset, test: Dataset, k: int,
    fitted: dict[str, Strategy] | None = None, say: Callable[[str], None] | None = None,
    embedding_cache: EmbeddingCache | None = None,
) -> pd.DataFrame:
    """The ``champions`` rows: each chatbot's test turns answered by its own champion, fitted on train.

    Chatbots sharing a champion (same family and settings) share one fit. ``fitted`` maps
    ``_key(name, full settings)`` to strategies already fitted on the same train data (the task's strategies),
    reused when a champion has exactly their settings, or when an ``adapted`` champion's base or partner has
    (:meth:`~copilot.strategies.adapted.AdaptedStrategy.reuse_fitted`). ``embedding_cache``: where the champions'
    sentence vectors are kept (:meth:`~copilot.strategies.base.Strategy.use_embedding_cache`).
    """
    fitted = {} if fitted is None else fitted
    known = dict(fitted)  # the task's strategies: members an adapted champion may take as they are

    def member(name: str, params: Mapping[str, Any]) -> Strategy | None:
        return known.get(_key(name, make_strategy(name, params).get_params()))

    by_setting: dict[str, list[str]] = {}
    for bot, champion in champions.items():
        full = make_strategy(champion.strategy, champion.params).get_params()  # defaults filled in
        by_setting.setdefault(_key(champion.strategy, full), []).append(bot)
    frames = []
    for key, bots in by_setting.items():
        name, params = json.loads(key)
        if key not in fitted:
            if say:
                names = ", ".join(sorted(bots)) if len(bots) <= 3 else f"{len(bots)} chatbots"
                say(f"fitting champion {name} {params} for {names}")
            strategy = make_strategy(name, params).use_embedding_cache(embedding_cache)
            if isinstance(strategy, AdaptedStrategy):
                strategy.reuse_fitted(member)
            fitted[key] = strategy.fit(train)
        part = test.subset(c for c in test.conversations if c.chatbot in set(bots))
        frames.append(predict(fitted[key], part, strategy_id=CHAMPIONS, k=k))
    return pd.concat(frames, ignore_index=True) if frames else predictions_frame([])


def leaderboard(summary: Mapping[str, Any], metric: str = "recall@1") -> pd.DataFrame:
    """One row per strategy of ``summary["overall"]``, best first by ``metric`` (its direction)."""
    rows = []
    for sid, scores in summary["overall"].items():
        rows.append({"strategy": sid, metric: scores.get(metric), f"{metric}_low": scores.get(f"{metric}_low"),
                     f"{metric}_high": scores.get(f"{metric}_high"),
                     **{m: scores.get(m) for m in ("recall@1", "recall@3", "mrr") if m != metric},
                     "n_turns": scores.get("n_turns")})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(metric, ascending=not METRICS.get(metric).higher_is_better, na_position="last",
                             kind="stable", ignore_index=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def format_leaderboard(summary: Mapping[str, Any], metric: str = "recall@1") -> str:
    """The leaderboard as aligned text: strategy, metric [low, high], recall@3, mrr, n_turns."""
    board = leaderboard(summary, metric)
    others = [m for m in ("recall@1", "recall@3", "mrr") if m != metric]
    lines = []
    header = ["strategy", f"{metric} [95% CI]", *others, "n_turns"]
    for _, row in board.iterrows():
        lines.append([str(row["strategy"]),
                      f"{_fmt(row[metric])} [{_fmt(row[f'{metric}_low'])}, {_fmt(row[f'{metric}_high'])}]",
                      *(_fmt(row[m]) for m in others), str(row["n_turns"])])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *lines])


def _embedder_if_needed(metrics: Sequence[str], cache: EmbeddingCache | None) -> Embedder | None:
    if not any(METRICS.get(m).needs_embedder for m in metrics):
        return None
    return Embedder(cache)


def data_tags(data: Dataset | str | os.PathLike[str], name: str) -> dict[str, str]:
    """Provenance of a split: its path and SHA-256 (``<name>_path``, ``<name>_sha256``), or "(in memory)"."""
    if isinstance(data, Dataset):
        return {f"{name}_path": "(in memory)"}
    return {f"{name}_path": str(data), f"{name}_sha256": file_sha256(Path(data))}


def run(
    task: Task, *, train: Dataset | str | os.PathLike[str], test: Dataset | str | os.PathLike[str],
    out_dir: str | os.PathLike[str], tracker: EvaluationTracker | None = None, progress: bool = True,
    embedding_cache: EmbeddingCache | None = None,
) -> dict[str, Any]:
    """Evaluate every strategy of ``task`` (base params) and, when the task has them, its champions.

    Fits each strategy on ``train`` (all the task's chatbots at once), predicts every agent turn of ``test``,
    and writes into ``out_dir``: ``summary.json`` (:func:`copilot.evaluation.metrics.summarize`'s shape, with a
    ``champions`` entry when the task has champions), ``predictions.parquet`` (every strategy's rows) and
    ``run.json`` (task, strategies and settings, data files and hashes, commit, timings). Prints the leaderboard
    when ``progress``. Sentence vectors (dense strategies, semantic metrics) are kept in ``embedding_cache``
    (None: in memory). Returns the summary.
    """
    say: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    train_ds, test_ds = task.restrict(as_dataset(train)), task.restrict(as_dataset(test))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    fitted: dict[str, Strategy] = {}
    timings: dict[str, dict[str, float]] = {}
    described: dict[str, Any] = {}
    for spec in task.strategies:
        strategy = make_strategy(spec.name, spec.params).use_embedding_cache(embedding_cache)
        start = time.perf_counter()
        strategy.fit(train_ds)
        fit_s = time.perf_counter() - start
        fitted[_key(spec.name, strategy.get_params())] = strategy
        start = time.perf_counter()
        frames.append(predict(strategy, test_ds, strategy_id=spec.id, k=task.k, progress=progress))
        timings[spec.id] = {"fit_s": round(fit_s, 3), "predict_s": round(time.perf_counter() - start, 3)}
        described[spec.id] = {"strategy": spec.name, "params": strategy.get_params(), "describe": strategy.describe()}
        say(f"{spec.id}: fit {fit_s:.1f}s, predict {timings[spec.id]['predict_s']:.1f}s")
    if task.global_strategy is not None:
        glob = task.global_strategy
        key = _key(glob.strategy, glob.params)
        if key not in fitted:
            fitted[key] = make_strategy(glob.strategy, glob.params).use_embedding_cache(embedding_cache).fit(train_ds)
        start = time.perf_counter()
        frames.append(predict(fitted[key], test_ds, strategy_id=GLOBAL, k=task.k, progress=progress))
        timings[GLOBAL] = {"predict_s": round(time.perf_counter() - start, 3)}
        described[GLOBAL] = {"strategy": glob.strategy, "params": fitted[key].get_params(),
                             "describe": fitted[key].describe()}
    if task.champions:
        orphans = sorted(set(test_ds.chatbot_ids()) - set(task.champions))
        if orphans:
            say(f"warning: no champion for {', '.join(orphans)}: these chatbots are not in the champions entry")
        start = time.perf_counter()
        frames.append(champions_predictions(task.champions, train=train_ds, test=test_ds, k=task.k,
                                            fitted=fitted, say=say, embedding_cache=embedding_cache))
        timings[CHAMPIONS] = {"fit_and_predict_s": round(time.perf_counter() - start, 3)}
        described[CHAMPIONS] = {bot: c.as_dict() for bot, c in sorted(task.champions.items())}
    frame = pd.concat(frames, ignore_index=True) if frames else predictions_frame([])
    start = time.perf_counter()
    summary = summarize(frame, n_boot=task.n_boot, seed=task.seed, metrics=task.metrics,
                        embedder=_embedder_if_needed(task.metrics, embedding_cache))
    timings["summarize"] = {"seconds": round(time.perf_counter() - start, 3)}
    write_json(out / "summary.json", summary, allow_nan=False)
    frame.to_parquet(out / "predictions.parquet", index=False)
    tags = {**data_tags(train, "train"), **data_tags(test, "test"), "commit": git_commit(),
            "split_seed": str(task.split_seed)}
    write_json(out / "run.json", allow_nan=False, document={
        "stage": "evaluate", "task": task.name, "task_path": str(task.path) if task.path else None,
        "data": task.data, "chatbots": list(task.chatbots) if task.chatbots else "all",
        "selection_metric": task.selection_metric, "n_boot": task.n_boot, "seed": task.seed, "k": task.k,
        "strategies": described, "timings": timings, **tags,
    })
    if tracker is not None:
        params = {sid: ({"strategy": info["strategy"], **info["params"]} if sid != CHAMPIONS
                        else {"champions": json.dumps(info, sort_keys=True, default=str)})
                  for sid, info in described.items()}
        tracker.log_evaluation(frame, summary, params, data_path=data_file(test), stage="evaluate",
                               tags={"copilot.task": task.name, **{f"copilot.{k}": str(v) for k, v in tags.items()}})
    if progress:
        print(format_leaderboard(summary, task.selection_metric))
    return summary
