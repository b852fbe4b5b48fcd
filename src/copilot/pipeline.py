"""The workbench's stages as library functions: what ``make demo``, the notebooks and the CLI all call.

A :class:`Workspace` is one dataset's folder under the work dir (``data/generated/<star|sample>/``) with fixed file
names, so each stage finds what the previous one wrote:

| stage | function | writes |
|---|---|---|
| data | :func:`prepare` | ``data.jsonl`` (STAR imported, or the sample), ``splits/{train,dev,test,train+dev}.jsonl`` |
| tune | :func:`tune_stage` | ``tune/tuning.json``, ``tune/leaderboard.csv``, ``tune/task.tuned.yaml`` |
| evaluate | :func:`evaluate_stage` | ``evaluate/summary.json``, ``evaluate/predictions.parquet`` (train+dev → test) |
| export | :func:`export_stage` | ``copilot-<chatbot>@champion`` in the MLflow registry, ``export.json`` |
| replay | :func:`replay_stage` | ``replay/turns.parquet``, ``replay/handoff.json``, ``replay/summary.json`` |
| report | :func:`report_stage` | ``<reports dir>/index.html`` |

Every stage that scores something logs it to MLflow when given a tracker
(:class:`copilot.serving.tracking.WorkbenchTracker`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from copilot._io import read_json, write_json
from copilot.data.importers.star import import_star
from copilot.data.records import Dataset, load_dataset, save_dataset
from copilot.data.splits import SPLITS, split_dataset, write_splits
from copilot.evaluation.runs import CHAMPIONS, GLOBAL, run
from copilot.evaluation.tasks import Task, load_task
from copilot.evaluation.tuning import TuningResult, tune
from copilot.live.replay import ReplayResult, run_replay, select
from copilot.live.replayer import ReplayConfig
from copilot.report.report import knobs_table, write_report
from copilot.serving.tracking import WorkbenchTracker
from copilot.settings import Settings, find_project_root
from copilot.strategies.embeddings import EmbeddingCache

if TYPE_CHECKING:
    from copilot.serving.export import ExportedModel

Say = Callable[[str], None]
FINAL_TRAIN = "train+dev"


@dataclass(frozen=True)
class Workspace:
    """One dataset's generated files. ``name`` is ``star`` or ``sample``; ``task_path`` its evaluation task;
    ``embedding_cache`` the sentence vectors every stage's strategies share (``Settings.cache_dir``)."""

    name: str
    root: Path
    task_path: Path
    embedding_cache: EmbeddingCache | None = field(default=None, compare=False, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data.jsonl"

    def split(self, name: str) -> Path:
        return self.root / "splits" / f"{name}.jsonl"

    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    @property
    def tuned_task(self) -> Path:
        return self.tune_dir / "task.tuned.yaml"

    @property
    def evaluate_dir(self) -> Path:
        return self.root / "evaluate"

    @property
    def replay_dir(self) -> Path:
        return self.root / "replay"

    @property
    def export_file(self) -> Path:
        return self.root / "export.json"

    def task(self, tuned: bool = False) -> Task:
        return load_task(self.tuned_task if tuned else self.task_path)

    def dataset(self, split: str | None = None) -> Dataset:
        return load_dataset(self.split(split) if split else self.data)


def workspace(settings: Settings) -> Workspace:
    """STAR's workspace when ``COPILOT_STAR_DIR`` is set, else the sample's, with the embedding cache of
    ``settings.cache_dir`` (notebooks start here)."""
    evals = find_project_root() / "evals"
    name = "star" if settings.star_dir is not None else "sample"
    return Workspace(name, settings.work_dir / name, evals / f"{name}.yaml", EmbeddingCache(settings.cache_dir))


def prepare(settings: Settings, say: Say = print) -> Workspace:
    """Import the data (STAR from ``COPILOT_STAR_DIR``, else the project's sample) and split it by conversation with
    the task's seed and fractions. Re-running re-imports, so a changed STAR folder or importer is picked up."""
    ws = workspace(settings)
    ws.root.mkdir(parents=True, exist_ok=True)
    if settings.star_dir is not None:
        say(f"importing STAR from {settings.star_dir} ...")
        dataset, report = import_star(settings.star_dir)
        write_json(ws.root / "import.json", report.as_dict(), default=None)
        for line in report.lines():
            say(f"  {line}")
    else:
        say(f"COPILOT_STAR_DIR is not set: running on the sample data {settings.sample_path}")
        dataset = load_dataset(settings.sample_path)
    save_dataset(dataset, ws.data)
    task = ws.task()
    splits = split_dataset(dataset, task.split_fractions, seed=task.split_seed)
    # once the settings are chosen on dev, the final fit uses all the data that is not test (evaluate, export)
    splits[FINAL_TRAIN] = splits["train"].subset([*splits["train"].conversations, *splits["dev"].conversations])
    write_splits(splits, ws.root / "splits")
    say(f"{ws.name}: {len(dataset.conversations)} conversations of {len(dataset.chatbots)} chatbots; "
        + ", ".join(f"{s} {len(splits[s].conversations)}" for s in SPLITS))
    return ws


def tune_stage(ws: Workspace, tracker: WorkbenchTracker | None = None, progress: bool = True) -> TuningResult:
    """Search every strategy's settings per chatbot on train/dev, pick champions (a challenger replaces the
    global strategy only if its paired interval on dev excludes 0), write the tuned
    task (the task plus ``champions:`` and ``global:``), and log every candidate to MLflow."""
    result = tune(ws.task(), train=ws.split("train"), dev=ws.split("dev"), out_dir=ws.tune_dir, tracker=tracker,
                  progress=progress, embedding_cache=ws.embedding_cache)
    result.write_task(ws.tuned_task)
    return result


def evaluate_stage(ws: Workspace, tracker: WorkbenchTracker | None = None, progress: bool = True
                   ) -> dict[str, Any]:
    """Fit on train+dev (the settings were chosen on dev), score on test: every strategy of the tuned task, the
    global strategy and the champions."""
    return run(ws.task(tuned=True), train=ws.split(FINAL_TRAIN), test=ws.split("test"), out_dir=ws.evaluate_dir,
               tracker=tracker, progress=progress, embedding_cache=ws.embedding_cache)


def export_stage(ws: Workspace, settings: Settings, say: Say = print) -> list[ExportedModel]:
    """Fit each chatbot's champion on train+dev exactly as the evaluation did and register it as
    ``copilot-<chatbot>`` with the alias ``champion``."""
    from copilot.serving.export import export_champions, load_champions  # loads MLflow: only for this stage

    champions = load_champions(ws.tune_dir / "tuning.json")
    say(f"exporting {len(champions)} champions to {settings.mlflow_tracking_uri} ...")
    exported = export_champions(champions, ws.dataset(FINAL_TRAIN), settings.mlflow_tracking_uri,
                                embedding_cache=ws.embedding_cache)
    write_json(ws.export_file, [{"chatbot": e.chatbot, "model": e.name, "version": e.version, "strategy": e.strategy,
                                 "run_id": e.run_id} for e in exported], default=None)
    return exported


def replay_stage(ws: Workspace, settings: Settings, tracker: WorkbenchTracker | None = None,
                 limit: int | None = None, progress: bool = True, say: Say = print) -> ReplayResult:
    """Replay the test split through a started ``handoff serve`` that serves the exported champions."""
    data = select(ws.dataset("test"), limit=limit)
    say(f"replaying {len(data.conversations)} test conversations through a started handoff server ...")
    result = run_replay(data, ws.replay_dir, tracking_uri=settings.mlflow_tracking_uri,
                        config=ReplayConfig(concurrency=8, agents=3), progress=progress,
                        embedding_cache_dir=settings.cache_dir, server_log_level=settings.replay_server_log_level)
    summary_path = ws.replay_dir / "summary.json"
    if tracker is not None and summary_path.exists():
        tracker.log_evaluation(result.turns, read_json(summary_path), {},
                               data_path=ws.split("test") if limit is None else None, stage="replay")
    return result


def champions_vs_global(summary: Mapping[str, Any], tuning: Mapping[str, Any], metric: str = "recall@1"
                        ) -> pd.DataFrame:
    """Per chatbot on the test split: its champion against the global strategy (both fitted on train+dev)."""
    global_id = GLOBAL
    rows = []
    for bot, scores in sorted(summary.get("per_chatbot", {}).items()):
        champ, glob = scores.get(CHAMPIONS), scores.get(global_id)
        if not champ or not glob:
            continue
        chosen = tuning.get("per_chatbot", {}).get(bot, {}).get("champion", {})
        row: dict[str, Any] = {"chatbot": bot, "champion": chosen.get("candidate", CHAMPIONS),
                               "global": tuning.get(GLOBAL, {}).get("candidate", GLOBAL)}
        for who, values in (("champion", champ), ("global", glob)):
            for suffix in ("", "_low", "_high"):
                row[f"{who}_{metric}{suffix}"] = values.get(f"{metric}{suffix}")
        rows.append(row)
    return pd.DataFrame(rows)


def report_stage(ws: Workspace, settings: Settings) -> Path:
    """The HTML report from what the other stages wrote (missing parts are said so on the page)."""
    summary = read_json(ws.evaluate_dir / "summary.json")
    tuning = read_json(ws.tune_dir / "tuning.json")
    handoff_path = ws.replay_dir / "handoff.json"
    turns_path = ws.replay_dir / "turns.parquet"
    return write_report(
        settings.reports_dir,
        summary=summary,
        predictions=pd.read_parquet(ws.evaluate_dir / "predictions.parquet"),
        handoff=read_json(handoff_path) if handoff_path.exists() else None,
        replay_turns=pd.read_parquet(turns_path) if turns_path.exists() else None,
        champions_vs_global=champions_vs_global(summary, tuning),
        knobs=knobs_table(tuning),
        title=f"Copilot report: {ws.name}",
        sources={"test split": str(ws.split("test")), "summary": str(ws.evaluate_dir / "summary.json"),
                 "tuning": str(ws.tune_dir / "tuning.json")},
    )
