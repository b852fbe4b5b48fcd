"""`copilot mlflow-ui`'s command, started for real on a free port over a store the tracker wrote: the experiments,
the runs and their artifacts are what the MLflow server shows (its REST API, which the UI itself reads)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workbench_testing import Evaluation

from copilot.serving.tracking import WorkbenchTracker, mlflow_ui_command
from copilot.settings import Settings

pytestmark = pytest.mark.slow
START_S = 120.0  # the server imports MLflow and checks the database's schema; two shared cores can be slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_ui(tmp_path: Path, evaluation: Evaluation, sample_path: Path) -> Iterator[tuple[str, list[str]]]:
    """The evaluation logged into a fresh project store, then the UI server over it; yields (url, run ids)."""
    settings = Settings.from_env({}, root=tmp_path)
    run_ids = WorkbenchTracker.from_settings(settings).log_evaluation(
        evaluation.frame, evaluation.summary, evaluation.params, data_path=sample_path, stage="evaluate")
    port = _free_port()
    log = (tmp_path / "mlflow-ui.log").open("wb")
    # its own process group: the server may start worker processes, and all of them must stop with the test
    process = subprocess.Popen(mlflow_ui_command(settings, port=port), cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"mlflow server exited with {process.returncode}: "
                                     f"{(tmp_path / 'mlflow-ui.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not up after {START_S} s: "
                                     f"{(tmp_path / 'mlflow-ui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, run_ids
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


def test_the_ui_server_shows_the_logged_experiments_runs_and_artifacts(mlflow_ui: tuple[str, list[str]]) -> None:
    url, run_ids = mlflow_ui
    with httpx.Client(base_url=url, timeout=30) as http:
        experiments = http.post("/api/2.0/mlflow/experiments/search", json={"max_results": 100}).json()
        by_name = {e["name"]: e["experiment_id"] for e in experiments["experiments"]}
        assert {"copilot/bank", "copilot/weather", "copilot/_all-chatbots"} <= set(by_name)

        found = http.post("/api/2.0/mlflow/runs/search", json={
            "experiment_ids": [by_name["copilot/bank"]],
            "filter": "tags.`copilot.strategy` = 'bm25(k1=1.2)'"}).json()["runs"]
        assert len(found) == 1
        run = found[0]
        assert run["info"]["run_id"] in run_ids and run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {"recall_at_1", "recall_at_1_low", "recall_at_1_high", "mrr", "latency_ms_p50"} <= set(metrics)
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["copilot.stage"] == "evaluate" and len(tags["copilot.data_sha256"]) == 64

        run_id = run["info"]["run_id"]
        top = http.get("/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}).json()["files"]
        assert {"predictions.json", "plots"} <= {f["path"] for f in top}
        listed = http.get("/api/2.0/mlflow/artifacts/list", params={"run_id": run_id, "path": "plots"}).json()
        assert {f["path"] for f in listed["files"]} == {
            "plots/latency.png", "plots/rank_histogram.png", "plots/leaderboard.png"}
        # what the UI fetches to show an artifact
        image = http.get("/get-artifact", params={"run_uuid": run_id, "path": "plots/latency.png"})
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        table = http.get("/get-artifact", params={"run_uuid": run_id, "path": "predictions.json"}).json()
        assert "suggested_labels" in table["columns"] and len(table["data"]) == 12

        overall = http.post("/api/2.0/mlflow/runs/search", json={
            "experiment_ids": [by_name["copilot/_all-chatbots"]]}).json()["runs"]
        assert {r["info"]["run_name"] for r in overall} == {"tfidf(ngram_range=(1, 2))", "bm25(k1=1.2)", "champions"}
