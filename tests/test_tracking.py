"""Tracking into a real MLflow SQLite store: what a run logs is what MLflow gives back."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from mlflow import MlflowClient

from copilot.tracking import MlflowTracker, RunRecord, experiment_name, file_sha256, git_commit


def test_a_run_logs_params_metrics_tags_and_artifacts(mlflow_uri: str, tmp_path: Path) -> None:
    tracker = MlflowTracker(mlflow_uri)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    table = pd.DataFrame({"conversation_id": ["a", "b"], "hit": [1, 0]})
    run_id = tracker.log_run(RunRecord(
        experiment=experiment_name("bank+weather"),
        run_name="tfidf",
        params={"ngram_range": [1, 2], "nested": {"k": 3}, "name": "tfidf"},
        metrics={"recall@1": 0.5, "recall@1_low": 0.25, "skipped": float("nan")},
        tags={"copilot.stage": "evaluate"},
        tables={"predictions.json": table},
        figures={"plots/recall.png": fig},
        documents={"summary.json": {"recall@1": 0.5}},
    ))
    plt.close(fig)
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tfidf"
    assert client.get_experiment(run.info.experiment_id).name == "copilot/bank+weather"
    assert run.data.params == {"ngram_range": "[1, 2]", "nested.k": "3", "name": "tfidf"}
    assert run.data.metrics == {"recall_at_1": 0.5, "recall_at_1_low": 0.25}  # NaN is not logged
    assert run.data.tags["copilot.stage"] == "evaluate"
    paths = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"predictions.json", "summary.json", "plots/recall.png"} <= paths
    local = client.download_artifacts(run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == {"recall@1": 0.5}
    # a second tracker on the same store reuses the experiment instead of failing on the name
    again = MlflowTracker(mlflow_uri).log_run(RunRecord(experiment=experiment_name("bank+weather"), run_name="x"))
    assert client.get_run(again).info.experiment_id == run.info.experiment_id


def test_artifacts_live_beside_a_local_store(mlflow_uri: str) -> None:
    tracker = MlflowTracker(mlflow_uri)
    exp = tracker.client.get_experiment(tracker.experiment_id("copilot/placement"))
    db_dir = Path(mlflow_uri[len("sqlite:///"):]).parent
    assert exp.artifact_location == (db_dir / "mlartifacts" / "copilot_placement").as_uri()


def test_provenance_helpers(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    assert file_sha256(data) == "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
    assert git_commit(tmp_path) == "unknown"
    assert len(git_commit(Path(__file__).parent).split("-")[0]) == 40
