"""Logging an evaluation to MLflow: 36 chatbots x 10 strategies (the STAR size) through
``WorkbenchTracker.log_evaluation``, against the plain way of logging the same runs (one MLflow call per metric and
param, ``log_table``, and each run drawing and logging its own plots) on a few chatbots, as time per run.

    python benchmarks/tracking.py [--chatbots 36] [--strategies 10] [--turns 40] [--baseline-chatbots 3]

Goal: the whole evaluation logged in about a minute on this 2-core machine, several times faster per run than the
plain way. Constructed data (tests/workbench_testing.py); a temporary SQLite store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the constructed evaluation lives with the tests that use it

from mlflow import MlflowClient  # noqa: E402
from workbench_testing import Evaluation, make_evaluation  # noqa: E402

from copilot.report import plots  # noqa: E402
from copilot.serving.tracking import MlflowTracker, WorkbenchTracker, _metric_key, experiment_name  # noqa: E402


def plain(client: MlflowClient, tracker: MlflowTracker, evaluation: Evaluation, chatbots: list[str]) -> int:
    runs = 0
    for chatbot in chatbots:
        experiment = tracker.experiment_id(experiment_name(chatbot) + "-plain")
        rows = evaluation.frame[evaluation.frame["chatbot"] == chatbot]
        for strategy, metrics in evaluation.summary["per_chatbot"][chatbot].items():
            run_id = client.create_run(experiment, run_name=strategy).info.run_id
            for key, value in metrics.items():
                client.log_metric(run_id, _metric_key(key), float(value))
            for key, value in evaluation.params[strategy].items():
                client.log_param(run_id, key, str(value))
            client.set_tag(run_id, "copilot.stage", "evaluate")
            client.log_table(run_id, rows[rows["strategy"] == strategy], artifact_file="predictions.json")
            client.log_figure(run_id, plots.rank_histogram(rows), "plots/rank_histogram.png")
            client.log_figure(run_id, plots.latency(rows), "plots/latency.png")
            client.set_terminated(run_id)
            runs += 1
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chatbots", type=int, default=36)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--baseline-chatbots", type=int, default=3)
    args = parser.parse_args()
    evaluation = make_evaluation(chatbots=tuple(f"bot{i:02d}" for i in range(args.chatbots)),
                                 strategies=tuple(f"strategy{i}(k={i})" for i in range(args.strategies)),
                                 turns=args.turns)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments()  # the schema, created once, is not what is measured
        tracker = MlflowTracker(uri)
        data = Path(tmp) / "data.jsonl"
        data.write_text("{}\n")
        start = time.perf_counter()
        run_ids = WorkbenchTracker(tracker).log_evaluation(evaluation.frame, evaluation.summary, evaluation.params,
                                                           data_path=data, stage="evaluate")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        baseline_runs = plain(client, tracker, evaluation, sorted(evaluation.summary["per_chatbot"])[
            :args.baseline_chatbots])
        baseline = time.perf_counter() - start
    per_run, per_run_plain = ours / len(run_ids) * 1000, baseline / baseline_runs * 1000
    print(f"log_evaluation: {len(run_ids)} runs ({args.chatbots} chatbots x {args.strategies} strategies + overall, "
          f"{len(evaluation.frame)} turns) in {ours:.1f} s, {per_run:.0f} ms per run")
    print(f"plain calls:    {baseline_runs} runs in {baseline:.1f} s, {per_run_plain:.0f} ms per run")
    print(f"ratio (plain / ours, per run): {per_run_plain / per_run:.1f}x")


if __name__ == "__main__":
    main()
