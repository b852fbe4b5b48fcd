"""Experiment tracking through a small protocol; MLflow is the implementation (W6).

Layout in MLflow: one experiment per chatbot (``copilot/<chatbot>``), one run per strategy and settings, with the
strategy's params, the metrics with their interval bounds, the per-turn predictions as a table artifact, plots as
artifacts, and tags for the data file's hash, the git commit and the stage (evaluate, tune, replay).
Evaluation, tuning and replay take an optional :class:`Tracker`; they log only when given one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

EXPERIMENT_PREFIX = "copilot/"
OVERALL_EXPERIMENT = "copilot/_all-chatbots"


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
            exp_id = self.client.create_experiment(name, artifact_location=location)
        self._experiments[name] = exp_id
        return exp_id

    def log_run(self, record: RunRecord) -> str:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id(record.experiment), run_name=record.run_name)
        run_id = str(run.info.run_id)
        try:
            now = run.info.start_time
            metrics = [Metric(_metric_key(k), float(v), now, 0) for k, v in record.metrics.items()
                       if v is not None and math.isfinite(float(v))]
            params = [Param(k, v) for k, v in _flat_params(record.params).items()]
            tags = [RunTag(k, str(v)) for k, v in record.tags.items()]
            for start in range(0, max(len(metrics), len(params), len(tags)), 100):  # MLflow's batch limits
                self.client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                                      tags=tags[start:start + 100])
            for name, frame in record.tables.items():
                self.client.log_table(run_id, frame, artifact_file=name)
            for name, figure in record.figures.items():
                self.client.log_figure(run_id, figure, artifact_file=name)
            for name, document in record.documents.items():
                self.client.log_dict(run_id, document, artifact_file=name)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id


def _default_artifact_root(tracking_uri: str) -> Path | None:
    """For a local SQLite store, artifacts go beside it (``mlartifacts/``), whatever the working folder."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(tracking_uri[len("sqlite:///"):])
        return db.parent / "mlartifacts"
    return None


def file_sha256(path: str | Path) -> str:
    """The hash of a data file, logged as a tag so a run names exactly the data it saw."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(root: str | Path | None = None) -> str:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or ``unknown`` outside git."""
    try:
        cwd = str(root) if root else None
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
