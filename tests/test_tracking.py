"""Tracking into a real MLflow SQLite store: what a run logs is what MLflow gives back."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from mlflow import MlflowClient
from workbench_testing import Evaluation

from copilot._io import file_sha256, git_commit
from copilot.serving.tracking import (
    MlflowTracker,
    RunRecord,
    WorkbenchTracker,
    experiment_name,
    mlflow_ui_command,
)
from copilot.settings import Settings

STRATEGY = "tfidf(ngram_range=(1, 2))"


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
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table


def test_provenance_helpers(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    assert file_sha256(data) == "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
    assert git_commit(tmp_path) == "unknown"
    assert len(git_commit(Path(__file__).parent).split("-")[0]) == 40


def test_an_evaluation_is_one_run_per_chatbot_and_strategy_plus_overall_runs(
        mlflow_uri: str, evaluation: Evaluation, sample_path: Path, tmp_path: Path) -> None:
    tracker = WorkbenchTracker(MlflowTracker(mlflow_uri))
    run_ids = tracker.log_evaluation(evaluation.frame, evaluation.summary, evaluation.params,
                                     data_path=sample_path, stage="evaluate")
    assert len(run_ids) == 2 * 2 + 3  # (bank, weather) x 2 strategies, then 2 strategies + champions overall
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiments = {name: client.get_experiment_by_name(name) for name in
                   ("copilot/bank", "copilot/weather", "copilot/_all-chatbots")}
    assert all(experiments.values())
    bank = client.search_runs([experiments["copilot/bank"].experiment_id],
                              filter_string=f"tags.`copilot.strategy` = '{STRATEGY}'")
    run = next(r for r in bank if r.info.run_id in run_ids)
    assert run.info.status == "FINISHED" and run.info.run_name == STRATEGY
    expected = evaluation.summary["per_chatbot"]["bank"][STRATEGY]
    assert run.data.metrics["recall_at_1"] == expected["recall@1"]
    assert run.data.metrics["recall_at_1_low"] == expected["recall@1_low"]
    assert run.data.metrics["mrr_high"] == expected["mrr_high"]
    assert run.data.metrics["n_predictions"] == 12 and "latency_ms_p50" in run.data.metrics
    assert run.data.params["strategy"] == STRATEGY and run.data.params["nested.x"] == "[1, 2]"
    tags = run.data.tags
    assert tags["copilot.stage"] == "evaluate" and tags["copilot.chatbot"] == "bank"
    assert tags["copilot.data_sha256"] == file_sha256(sample_path)
    assert tags["copilot.git_commit"] == git_commit(Path(__file__).parent)
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "predictions.json" in paths
    assert plots == {"plots/rank_histogram.png", "plots/latency.png", "plots/leaderboard.png"}
    # logged as MlflowClient.log_table does (its load_table reads the global tracking URI, hence by hand here)
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "predictions.json", "type": "table"}]
    table = pd.read_json(client.download_artifacts(run.info.run_id, "predictions.json", str(tmp_path)),
                         orient="split")
    assert len(table) == 12 and set(table["chatbot"]) == {"bank"} and set(table["strategy"]) == {STRATEGY}

    overall = client.search_runs([experiments["copilot/_all-chatbots"].experiment_id])
    by_name = {r.info.run_name: r for r in overall if r.info.run_id in run_ids}
    assert set(by_name) == {*evaluation.params, "champions"}
    assert by_name["champions"].data.params == {"strategy": "champions"}
    assert "latency_ms_p50" not in by_name["champions"].data.metrics  # no turns of its own in this table
    assert by_name[STRATEGY].data.metrics["recall_at_1"] == evaluation.summary["overall"][STRATEGY]["recall@1"]
    local = client.download_artifacts(by_name[STRATEGY].info.run_id, "predictions.parquet", str(tmp_path))
    assert len(pd.read_parquet(local)) == 24


def test_a_stage_outside_the_known_ones_is_refused(mlflow_uri: str, evaluation: Evaluation,
                                                   sample_path: Path) -> None:
    with pytest.raises(ValueError, match="stage must be one of evaluate, tune, replay"):
        WorkbenchTracker(MlflowTracker(mlflow_uri)).log_evaluation(
            evaluation.frame, evaluation.summary, {}, data_path=sample_path, stage="train")


def test_the_mlflow_ui_command_serves_the_trackers_store(tmp_path: Path) -> None:
    settings = Settings.from_env({}, root=tmp_path)
    command = mlflow_ui_command(settings, port=5001)
    assert command[:2] == ["env", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false"]
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlartifacts").resolve()
    assert command[command.index("--default-artifact-root") + 1] == artifacts.as_uri()
    assert command[command.index("--artifacts-destination") + 1] == str(artifacts)
    assert command[-6:] == ["--host", "127.0.0.1", "--port", "5001", "--workers", "1"]
    with pytest.raises(ValueError, match="tracking server already"):
        mlflow_ui_command(Settings.from_env({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, root=tmp_path))


def test_copilot_mlflow_ui_prints_the_command(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from copilot.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["mlflow-ui", "--print-only", "--port", "5011"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false ") and "mlflow server" in printed
    assert "--port 5011 --workers 1" in printed
