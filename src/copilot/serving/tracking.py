"""Experiment tracking through a small protocol; MLflow is the implementation.

Layout in MLflow: one experiment per chatbot (``copilot/<chatbot>``), one run per strategy and settings, with the
strategy's params, the metrics with their interval bounds, the per-turn predictions as a table artifact, plots as
artifacts, and tags for the data file's hash, the git commit and the stage (evaluate, tune, replay).
Evaluation, tuning and replay take an optional :class:`Tracker`; they log only when given one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from copilot._io import file_sha256, git_commit, write_json

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from copilot.settings import Settings

EXPERIMENT_PREFIX = "copilot/"
OVERALL_EXPERIMENT = "copilot/_all-chatbots"
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_name(chatbot: str) -> str:
    """The experiment that holds every run of one chatbot."""
    return f"{EXPERIMENT_PREFIX}{chatbot}"


@dataclass
class RunRecord:
    """Everything one run logs. Tables and figures become artifacts; params are stringified by the tracker."""

    experiment: str
    run_name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    figures: Mapping[str, Figure] = field(default_factory=dict)
    documents: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)
    """Artifacts already on disk (artifact path -> local file), e.g. one plot shared by many runs."""


class Tracker(Protocol):
    """Where runs go. ``log_run`` returns the run's id in the tracking store."""

    def log_run(self, record: RunRecord) -> str: ...


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out[name] = text[:6000]  # MLflow's limit on a param value
    return out


def _metric_key(name: str) -> str:
    # MLflow allows letters, digits, _ - . space / : and @ is not among them on every store.
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", name.replace("@", "_at_"))


class MlflowTracker:
    """A :class:`Tracker` writing to an MLflow tracking store (``sqlite:///...`` by default, or a server URL).

    Uses an explicit ``MlflowClient``, never MLflow's global state, so several trackers (tests, a notebook and a
    server) can live in one process.
    """

    def __init__(self, tracking_uri: str, artifact_root: str | Path | None = None):
        # MLflow (seconds to import) loads with the first tracker: the command line, the demo and the notebooks
        # import this module for names and the UI command alone.
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.artifact_root = Path(artifact_root) if artifact_root else _default_artifact_root(tracking_uri)
        self._experiments: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        """Get or create the experiment ``name`` (artifacts beside the store for a local database)."""
        if name in self._experiments:
            return self._experiments[name]
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            exp_id = str(found.experiment_id)
        else:
            location = None
            if self.artifact_root is not None:
                slug = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
                location = (self.artifact_root / slug).resolve().as_uri()
            # The UI then opens on the runs table (params, metrics) instead of guessing a GenAI experiment.
            exp_id = self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        self._experiments[name] = exp_id
        return exp_id

    def log_run(self, record: RunRecord) -> str:
        """Log one run: metrics, params and tags in batches, every artifact in one upload."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        run = self.client.create_run(self.experiment_id(record.experiment), run_name=record.run_name)
        run_id = str(run.info.run_id)
        try:
            now = run.info.start_time
            metrics = [Metric(_metric_key(k), float(v), now, 0) for k, v in record.metrics.items()
                       if v is not None and math.isfinite(float(v))]
            params = [Param(k, v) for k, v in _flat_params(record.params).items()]
            tags = [RunTag(k, str(v)) for k, v in record.tags.items()]
            if record.tables:
                # What MlflowClient.log_table records, so the UI shows the tables as tables.
                tags.append(RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps(
                    [{"path": name, "type": "table"} for name in record.tables])))
            for start in range(0, max(len(metrics), len(params), len(tags)), 100):  # MLflow's batch limits
                self.client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                                      tags=tags[start:start + 100])
            if record.tables or record.figures or record.documents or record.files:
                with tempfile.TemporaryDirectory(prefix="copilot-run-") as tmp:
                    _write_artifacts(Path(tmp), record)
                    self.client.log_artifacts(run_id, tmp)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id


def _write_artifacts(folder: Path, record: RunRecord) -> None:
    """Lay out a run's artifacts in ``folder`` (then uploaded in one call, instead of one call per artifact)."""

    def target(name: str) -> Path:
        path = folder / name
        if folder.resolve() not in path.resolve().parents:
            raise ValueError(f"artifact path {name!r} leaves the run's folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    for name, frame in record.tables.items():
        if name.endswith(".parquet"):
            frame.to_parquet(target(name), index=False)
        elif name.endswith(".json"):  # the layout MlflowClient.log_table writes and the UI reads
            frame.to_json(target(name), orient="split", index=False, date_format="iso")
        else:
            raise ValueError(f"a table artifact must end in .json or .parquet, not {name!r}")
    for name, figure in record.figures.items():
        figure.savefig(target(name), dpi=100, bbox_inches="tight")
    for name, document in record.documents.items():
        write_json(target(name), document, sort_keys=True)
    for name, source in record.files.items():
        shutil.copyfile(source, target(name))


def _default_artifact_root(tracking_uri: str) -> Path | None:
    """For a local SQLite store, artifacts go beside it (``mlartifacts/``), whatever the working folder."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(tracking_uri[len("sqlite:///"):])
        return db.parent / "mlartifacts"
    return None


STAGES = ("evaluate", "tune", "replay")
METRICS_TABLE = "predictions.json"  # a chatbot's turns: small, and the UI shows a .json table as a table
OVERALL_TABLE = "predictions.parquet"  # every chatbot's turns: compact


class WorkbenchTracker:
    """Logs what the workbench produces to a :class:`Tracker` in the layout of the module docstring.

    One run per (chatbot, strategy) in experiment ``copilot/<chatbot>``, and one run per strategy over all chatbots
    in ``copilot/_all-chatbots``. Each run has the strategy's params, the summary's metrics with their interval
    bounds (``recall_at_1``, ``recall_at_1_low``, ...), latency and token figures from the predictions, the turns
    as a table artifact, plots, and tags naming the data file's SHA-256, the git commit and the stage.

    Plots compare a chatbot's strategies, so each is drawn once per chatbot and the same file is attached to every
    run of that chatbot: drawing is what costs, not copying (36 chatbots × 10 strategies is 360 runs).
    """

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkbenchTracker:
        """The MLflow store of ``settings`` (by default ``mlflow.db`` with ``mlartifacts/`` beside it)."""
        return cls(MlflowTracker(settings.mlflow_tracking_uri))

    def log_evaluation(self, frame: pd.DataFrame, summary: Mapping[str, Any],
                       params_by_strategy: Mapping[str, Mapping[str, Any]], *, data_path: str | os.PathLike[str] | None,
                       stage: str, tags: Mapping[str, str] | None = None) -> list[str]:
        """Log an evaluation (or a tuning or a replay: ``stage``); returns the ids of the runs, per chatbot first.

        Args:
            frame: the per-turn predictions table (:mod:`copilot.data.predictions`), every chatbot and strategy.
            summary: ``{"overall": {strategy: metrics}, "per_chatbot": {chatbot: {strategy: metrics}}}``.
            params_by_strategy: each strategy's ``get_params()``; a strategy missing here (e.g. ``champions``)
                is logged without params.
            data_path: the dataset file the evaluation read; its SHA-256 becomes a tag (None: not a file).
            stage: one of :data:`STAGES`.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        common = {
            "copilot.stage": stage,
            "copilot.data_path": str(data_path) if data_path is not None else "in memory",
            "copilot.data_sha256": file_sha256(data_path) if data_path is not None else "unknown",
            **(tags or {}),
            "copilot.git_commit": git_commit(Path(__file__).resolve().parent),
        }
        if common["copilot.git_commit"] != "unknown":
            common["mlflow.source.git.commit"] = common["copilot.git_commit"].removesuffix("-dirty")
        per_chatbot: Mapping[str, Mapping[str, Any]] = summary.get("per_chatbot", {})
        groups = dict(tuple(frame.groupby(["chatbot", "strategy"], sort=False))) if len(frame) else {}
        by_strategy = dict(tuple(frame.groupby("strategy", sort=False))) if len(frame) else {}
        chatbots = sorted(set(per_chatbot) | set(frame["chatbot"].unique() if len(frame) else []))
        run_ids: list[str] = []
        # Drawing is CPU work and a run is mostly waiting for SQLite's commits, so one thread draws the next
        # chatbot's plots while this one logs the runs of the last.
        painter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copilot-plots")
        with tempfile.TemporaryDirectory(prefix="copilot-plots-") as tmp:
            folder = Path(tmp)
            try:
                drawn = [painter.submit(_chatbot_plots, folder / str(index), chatbot,
                                        frame[frame["chatbot"] == chatbot] if len(frame) else frame,
                                        per_chatbot.get(chatbot, {}))
                         for index, chatbot in enumerate(chatbots)]
                overall: Mapping[str, Any] = summary.get("overall", {})
                drawn_overall = painter.submit(_overall_plots, folder / "all", frame, summary)
                for chatbot, files in zip(chatbots, drawn, strict=True):
                    for strategy in _ordered(per_chatbot.get(chatbot, {}), frame, chatbot):
                        own = groups.get((chatbot, strategy))
                        run_ids.append(self.tracker.log_run(RunRecord(
                            experiment=experiment_name(chatbot),
                            run_name=strategy[:250],
                            params={"strategy": strategy, **params_by_strategy.get(strategy, {})},
                            metrics={**per_chatbot.get(chatbot, {}).get(strategy, {}), **_turn_metrics(own)},
                            tags={**common, "copilot.chatbot": chatbot, "copilot.strategy": strategy},
                            tables={METRICS_TABLE: own} if own is not None else {},
                            files=files.result(),
                        )))
                for strategy in _ordered(overall, frame):
                    own = by_strategy.get(strategy)
                    run_ids.append(self.tracker.log_run(RunRecord(
                        experiment=OVERALL_EXPERIMENT,
                        run_name=strategy[:250],
                        params={"strategy": strategy, **params_by_strategy.get(strategy, {})},
                        metrics={**overall.get(strategy, {}), **_turn_metrics(own)},
                        tags={**common, "copilot.chatbot": "_all-chatbots", "copilot.strategy": strategy},
                        tables={OVERALL_TABLE: own} if own is not None else {},
                        files=drawn_overall.result(),
                        documents={"summary.json": summary},
                    )))
            finally:  # after a failure, drop the drawings not started yet
                painter.shutdown(wait=True, cancel_futures=True)
        return run_ids


def _save(folder: Path, figures: Mapping[str, Figure]) -> dict[str, Path]:
    """Draw each figure once into ``folder``; returns artifact path -> file."""
    # matplotlib loads only when plots are drawn: the server imports this module (through serving.export).
    from copilot.report import plots

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, figure in figures.items():
        path = folder / Path(name).name
        path.write_bytes(plots.png(figure))
        files[name] = path
    return files


def _chatbot_plots(folder: Path, chatbot: str, rows: pd.DataFrame, metrics: Mapping[str, Any]) -> dict[str, Path]:
    """The plots every run of one chatbot carries: its strategies side by side."""
    from copilot.report import plots  # lazy, as in _save

    figures: dict[str, Figure] = {}
    if len(rows):
        figures["plots/rank_histogram.png"] = plots.rank_histogram(rows, title=f"{chatbot}: rank")
        figures["plots/latency.png"] = plots.latency(rows, title=f"{chatbot}: suggestion latency")
    if metrics:
        figures["plots/leaderboard.png"] = plots.leaderboard({"per_chatbot": {chatbot: metrics}}, overall=False)
    return _save(folder, figures)


def _overall_plots(folder: Path, frame: pd.DataFrame, summary: Mapping[str, Any]) -> dict[str, Path]:
    from copilot.report import plots  # lazy, as in _save

    figures: dict[str, Figure] = {}
    if len(frame):
        figures["plots/rank_histogram.png"] = plots.rank_histogram(frame)
        figures["plots/latency.png"] = plots.latency(frame)
    if summary.get("per_chatbot") or summary.get("overall"):
        figures["plots/leaderboard.png"] = plots.leaderboard(summary)
    return _save(folder, figures)


def _ordered(metrics_by_strategy: Mapping[str, Any], frame: pd.DataFrame, chatbot: str | None = None) -> list[str]:
    """The summary's strategies, then any that only the predictions have (of ``chatbot``, when given)."""
    names = list(metrics_by_strategy)
    rows = frame[frame["chatbot"] == chatbot] if chatbot is not None and len(frame) else frame
    if len(rows):
        names += [s for s in rows["strategy"].unique() if s not in metrics_by_strategy]
    return [str(name) for name in names]


def _turn_metrics(rows: pd.DataFrame | None) -> dict[str, float]:
    """Latency and token figures of one run's turns (the summary has the recall metrics)."""
    if rows is None or rows.empty:
        return {}
    latency = rows["latency_ms"].astype(float)
    return {
        "latency_ms_p50": float(latency.quantile(0.5)),
        "latency_ms_p90": float(latency.quantile(0.9)),
        "latency_ms_p99": float(latency.quantile(0.99)),
        "latency_ms_mean": float(latency.mean()),
        "tokens_mean": float(rows["tokens"].astype(float).mean()),
        "n_predictions": float(len(rows)),
    }


def is_server(settings: Settings) -> bool:
    """Whether the tracking store is a server already (then it has its own UI)."""
    return urlparse(settings.mlflow_tracking_uri).scheme in ("http", "https", "databricks")


def mlflow_ui_command(settings: Settings, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The command that serves the MLflow UI over the workbench's store, with what this machine needs.

    One worker (the machine has two cores shared by everyone) and MLflow's job runner off (it wants Huey and a
    second database, which nothing here uses). For a local SQLite store, artifacts live in ``mlartifacts/`` beside
    the database, for the experiments the tracker creates and for any made in the UI. ``env`` sets the variable so
    the printed command can be pasted as it is.

    Raises:
        ValueError: when the store is already a server (``http(s)://``): open that one instead.
    """
    uri = settings.mlflow_tracking_uri
    if is_server(settings):
        raise ValueError(f"MLFLOW_TRACKING_URI is a tracking server already ({uri}): open it in a browser")
    command = ["env", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false", sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", uri]
    root = _default_artifact_root(uri)
    if root is not None:
        command += ["--default-artifact-root", root.resolve().as_uri(), "--artifacts-destination", str(root.resolve())]
    return [*command, "--host", host, "--port", str(port), "--workers", "1"]
