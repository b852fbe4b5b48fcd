"""Tasks, evaluate and tune end to end on the project's sample, through the library and the command line.

Only the ``tfidf`` family is required here (``--only tfidf``); the task files name other families too, and a task
file whose families are not all registered in this checkout is skipped by name, not failed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import yaml

from copilot._io import file_sha256
from copilot.cli import main
from copilot.data.context import Context, Suggestion
from copilot.data.records import load_dataset
from copilot.data.splits import split_dataset, write_splits
from copilot.evaluation.metrics import summarize
from copilot.evaluation.runs import predict, run
from copilot.evaluation.tasks import TaskError, load_task
from copilot.evaluation.tuning import tune
from copilot.strategies import STRATEGIES, make_strategy
from copilot.strategies.tfidf import TfidfStrategy

ROOT = Path(__file__).resolve().parents[1]
EVALS = sorted((ROOT / "evals").glob("*.yaml"))


@pytest.fixture(scope="module")
def sample_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("splits")
    return write_splits(split_dataset(load_dataset(ROOT / "data/sample/conversations.jsonl"), seed=0), out)


def _families(path: Path) -> set[str]:
    raw = yaml.safe_load(path.read_text())
    names = {s["name"] for s in raw.get("strategies") or []}
    for inc in [raw["include"]] if isinstance(raw.get("include"), str) else raw.get("include") or []:
        names |= _families(path.parent / inc)
    return names


@pytest.mark.parametrize("path", EVALS, ids=[p.name for p in EVALS])
def test_every_task_file_loads(path: Path) -> None:
    missing = sorted(_families(path) - set(STRATEGIES.names()))
    if missing:
        pytest.skip(f"families not registered in this checkout: {missing}")
    task = load_task(path)
    assert task.strategies and task.selection_metric in task.metrics


def test_task_files_load_with_only_the_registered_families() -> None:
    for path in EVALS:
        task = load_task(path, only=["tfidf"])
        assert [s.name for s in task.strategies] == ["tfidf"]
        assert task.strategy("tfidf").grid_points()


def test_llm_variant_includes_the_star_task() -> None:
    raw_ids = [s["name"] for s in yaml.safe_load((ROOT / "evals/star.yaml").read_text())["strategies"]]
    assert "llm" not in raw_ids and "llm" in _families(ROOT / "evals/star.llm.yaml")
    task = load_task(ROOT / "evals/star.llm.yaml", only=["tfidf"])
    assert task.name == "star.llm" and task.data == "star" and task.n_boot == 1000


def test_unknown_strategy_gets_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("strategies:\n  - name: tfidff\n")
    with pytest.raises(TaskError, match="did you mean 'tfidf'"):
        load_task(path)
    path.write_text("strategies:\n  - name: tfidf\n    grid: {neighbour: [1, 2]}\n")
    with pytest.raises(TaskError, match="did you mean 'neighbours'"):
        load_task(path)
    path.write_text("selection_metric: recal@1\nstrategies:\n  - name: tfidf\n")
    with pytest.raises(TaskError, match="did you mean 'recall@1'"):
        load_task(path)
    assert main(["evaluate", str(path), "--out", str(tmp_path / "out")]) == 2


def test_variants_merge_strategies_by_id(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "n_boot: 50\nstrategies:\n  - {name: tfidf, params: {window: 1}}\n  - {name: tfidf, id: t2}\n")
    (tmp_path / "variant.yaml").write_text(
        "include: base.yaml\nn_boot: 20\nstrategies:\n  - {name: tfidf, params: {window: 3}}\n"
        "  - {id: t2, name: tfidf, drop: true}\n  - {name: tfidf, id: t3, grid: {window: [1, 2]}}\n")
    task = load_task(tmp_path / "variant.yaml")
    assert task.n_boot == 20 and task.name == "variant"
    assert [(s.id, dict(s.params)) for s in task.strategies] == [("tfidf", {"window": 3}), ("t3", {})]
    assert task.strategy("t3").grid_points() == [{"window": 1}, {"window": 2}]


def test_predict_covers_every_agent_turn(sample_splits: dict[str, Path]) -> None:
    train, test = load_dataset(sample_splits["train"]), load_dataset(sample_splits["test"])
    strategy = make_strategy("tfidf").fit(train)
    frame = predict(strategy, test, k=3)
    expected = sum(len(c.agent_turn_indices()) for c in test.conversations)
    assert len(frame) == expected and set(frame["strategy"]) == {strategy.describe()}
    assert frame["suggested_labels"].map(len).max() <= 3
    assert (frame["latency_ms"] >= 0).all() and (frame["tokens"] == 0).all()


class _CountingTfidf(TfidfStrategy):
    """TF-IDF that also counts 7 "tokens" per answered turn, as an LLM strategy counts what it spends
    (a test-only subclass, not registered)."""

    name = "counting-tfidf"

    def suggest_many(self, contexts: Sequence[Context], k: int = 3) -> list[list[Suggestion]]:
        self.tokens_ = getattr(self, "tokens_", 0) + 7 * len(contexts)
        return super().suggest_many(contexts, k)


def test_predict_shares_tokens_by_turn(sample_splits: dict[str, Path]) -> None:
    train, test = load_dataset(sample_splits["train"]), load_dataset(sample_splits["test"])
    frame = predict(_CountingTfidf().fit(train), test, strategy_id="counting", k=3)
    assert (frame["tokens"] == 7).all() and set(frame["strategy"]) == {"counting"}
    assert summarize(frame, n_boot=10)["overall"]["counting"]["tokens"] == 7.0


def _check_summary_shape(summary: dict, strategies: set[str], chatbots: set[str]) -> None:
    assert set(summary) == {"overall", "per_chatbot"}
    assert set(summary["overall"]) == strategies
    assert set(summary["per_chatbot"]) == chatbots
    for scores in [*summary["overall"].values(), *(s for bot in summary["per_chatbot"].values()
                                                    for s in bot.values())]:
        for metric in ("recall@1", "recall@3", "recall@5", "mrr"):
            assert scores[f"{metric}_low"] <= scores[metric] <= scores[f"{metric}_high"]
        assert scores["n_turns"] > 0


def test_evaluate_via_cli_end_to_end(sample_splits: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", str(ROOT / "evals/sample.yaml"), "--only", "tfidf", "--train",
                 str(sample_splits["train"]), "--test", str(sample_splits["test"]), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "recall@1 [95% CI]" in printed and "tfidf" in printed
    summary = json.loads((out / "summary.json").read_text())
    _check_summary_shape(summary, {"tfidf"}, {"card_support", "parcel_tracking", "pizza_delivery"})
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == sum(s["n_turns"] + s["n_free_turns"] for s in summary["overall"].values())
    meta = json.loads((out / "run.json").read_text())
    assert meta["strategies"]["tfidf"]["strategy"] == "tfidf" and len(meta["train_sha256"]) == 64


def test_tune_then_evaluate_the_tuned_task(sample_splits: dict[str, Path], tmp_path: Path) -> None:
    tuned = tmp_path / "sample.tuned.yaml"
    code = main(["tune", str(ROOT / "evals/sample.yaml"), "--only", "tfidf", "--train", str(sample_splits["train"]),
                 "--dev", str(sample_splits["dev"]), "--out", str(tmp_path / "tune"), "--write-task", str(tuned),
                 "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "tune" / "tuning.json").read_text())
    assert len(report["candidates"]) == 4  # tfidf's 2 x 2 grid
    for bot in ("card_support", "parcel_tracking", "pizza_delivery"):
        entry = report["per_chatbot"][bot]
        assert len(entry["candidates"]) == 4 and entry["champion"]["why"]
    # the champions are never worse than the global strategy on dev
    assert report["champions"]["dev"]["recall@1"] >= report["global"]["dev"]["recall@1"]
    board = pd.read_csv(tmp_path / "tune" / "leaderboard.csv")
    assert {"chatbot", "candidate", "recall@1", "recall@1_low", "recall@1_high", "is_champion"} <= set(board.columns)

    task = load_task(tuned, only=["tfidf"])
    assert set(task.champions) == {"card_support", "parcel_tracking", "pizza_delivery"}
    # the tuned task also names the global strategy: the candidate that tune found best over all chatbots
    assert task.global_strategy is not None
    assert task.global_strategy.as_dict() == {"strategy": report["global"]["strategy"],
                                              "params": report["global"]["params"]}
    summary = run(task, train=sample_splits["train"], test=sample_splits["test"], out_dir=tmp_path / "eval",
                  progress=False)
    _check_summary_shape(summary, {"tfidf", "global", "champions"},
                         {"card_support", "parcel_tracking", "pizza_delivery"})

    # docs/results.md is regenerated from the run folder
    assert main(["results", "--runs", str(tmp_path / "eval"), "--out", str(tmp_path / "results.md")]) == 0
    page = (tmp_path / "results.md").read_text()
    assert "**Champions**" in page and "`champions`" in page and "| pizza_delivery |" in page
    assert f"{summary['overall']['tfidf']['recall@1']:.3f} [" in page


def test_evaluate_every_family_of_the_sample_task(sample_splits: dict[str, Path], tmp_path: Path) -> None:
    path = ROOT / "evals/sample.yaml"
    missing = sorted(_families(path) - set(STRATEGIES.names()))
    if missing:
        pytest.skip(f"families not registered in this checkout: {missing}")
    task = load_task(path)
    summary = run(task, train=sample_splits["train"], test=sample_splits["test"], out_dir=tmp_path, progress=False)
    _check_summary_shape(summary, {s.id for s in task.strategies},
                         {"card_support", "parcel_tracking", "pizza_delivery"})


def test_tune_library_result(sample_splits: dict[str, Path], tmp_path: Path) -> None:
    task = load_task(ROOT / "evals/sample.yaml", only=["tfidf"])
    result = tune(task, train=sample_splits["train"], dev=sample_splits["dev"], out_dir=tmp_path, progress=False)
    assert result.global_candidate.name == "tfidf"
    assert set(result.champion_settings()) == {"card_support", "parcel_tracking", "pizza_delivery"}
    for bot, champion in result.champions.items():
        decisions = result.report["per_chatbot"][bot]["decisions"]
        if champion.key != result.global_candidate.key:  # a switch needs an interval above 0
            assert any(d["switch"] and d["paired"]["low"] > 0 for d in decisions)


def test_evaluate_and_tune_log_to_mlflow_when_asked(sample_splits: dict[str, Path], tmp_path: Path,
                                                    mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    from copilot.serving.tracking import experiment_name

    common = ["--only", "tfidf", "--quiet", "--track", "--tracking-uri", mlflow_uri]
    assert main(["tune", str(ROOT / "evals/sample.yaml"), "--train", str(sample_splits["train"]),
                 "--dev", str(sample_splits["dev"]), "--out", str(tmp_path / "tune"), *common]) == 0
    assert main(["evaluate", str(ROOT / "evals/sample.yaml"), "--train", str(sample_splits["train"]),
                 "--test", str(sample_splits["test"]), "--out", str(tmp_path / "eval"), *common]) == 0
    client = MlflowClient(tracking_uri=mlflow_uri)
    for bot in ("card_support", "parcel_tracking", "pizza_delivery"):
        experiment = client.get_experiment_by_name(experiment_name(bot))
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`copilot.task` = 'sample'")
        stages = [r.data.tags["copilot.stage"] for r in runs]
        # one run per tfidf grid point (2 x 2) from tune, one from evaluate
        assert stages.count("tune") == 4 and stages.count("evaluate") == 1
        evaluated = next(r for r in runs if r.data.tags["copilot.stage"] == "evaluate")
        assert evaluated.data.params["strategy"] == "tfidf"
        assert evaluated.data.tags["copilot.data_sha256"] == file_sha256(sample_splits["test"])
        low, value, high = (evaluated.data.metrics[k] for k in ("recall_at_1_low", "recall_at_1", "recall_at_1_high"))
        assert low <= value <= high
