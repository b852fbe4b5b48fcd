"""The tuner's per-chatbot knobs (step 4 of copilot.evaluation.tuning): kept only where the champion rule says so,
on constructed dev predictions whose winner is known; the champions they make are one shared setting that the
evaluation and the export fit once; and the stage on the project's sample through ``tune``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from copilot.data.context import Suggestion, contexts_for
from copilot.data.predictions import prediction_row, predictions_frame
from copilot.data.records import Dataset, load_dataset
from copilot.data.splits import split_dataset
from copilot.evaluation.metrics import score
from copilot.evaluation.runs import CHAMPIONS, _key, champions_predictions
from copilot.evaluation.tasks import KnobSettings, load_task, write_tuned_task
from copilot.evaluation.tuning import Candidate, tune, tune_knobs
from copilot.strategies import make_strategy

ROOT = Path(__file__).resolve().parents[1]
BOTS = ("card_support", "parcel_tracking", "pizza_delivery")  # the sample's chatbots: the champions fit on it
TFIDF = make_strategy("tfidf")
BM25 = make_strategy("bm25")
BASE = Candidate(TFIDF.describe(), "tfidf", "tfidf", TFIDF.get_params())
PARTNER = Candidate(BM25.describe(), "bm25", "bm25", BM25.get_params())


def _turns(bot: str, who: str, conv: int, turn: int) -> list[tuple[str, float]]:
    """(label, score) lists, best first, of the constructed case; the truth is always ``t``.

    pizza_delivery: the base puts the truth a close second, the partner first with confidence, so every blend
    finds it (recall@1 0 -> 1). card_support: the base is right and sure on even turns ((1.0, 0.1): top share
    0.91), wrong and unsure on odd ones ((0.55, 0.45)), and the partner is wrong and sure: a blend loses, a
    threshold at 0.91 keeps precision@1 1.0 at coverage 0.5. parcel_tracking: both always right.
    """
    if bot == "pizza_delivery":
        return [("w", 1.0), ("t", 0.9)] if who == "base" else [("t", 5.0), ("w2", 1.0)]
    if bot == "card_support":
        if who == "partner":
            return [("w", 5.0), ("t", 0.1)]
        return [("t", 1.0), ("w", 0.1)] if turn % 2 == 0 else [("w", 0.55), ("t", 0.45)]
    return [("t", 2.0), ("w", 1.0)]


def _dev_frame(conversations: int = 20, turns: int = 4) -> pd.DataFrame:
    rows = []
    for bot in BOTS:
        for who, candidate in (("base", BASE), ("partner", PARTNER)):
            for conv in range(conversations):
                for turn in range(turns):
                    rows.append(prediction_row(
                        strategy=candidate.key, chatbot=bot, conversation_id=f"{bot}-{conv}", turn_index=turn,
                        truth_label="t", truth_text="T", latency_ms=1.0,
                        suggestions=[Suggestion(label.upper(), s, label) for label, s in _turns(bot, who, conv, turn)]))
    return predictions_frame(rows)


def _knobs(frame: pd.DataFrame, settings: KnobSettings) -> Any:
    per_bot = {bot: {c.key: score(frame[(frame["chatbot"] == bot) & (frame["strategy"] == c.key)], ["recall@1"],
                                  n_boot=0) for c in (BASE, PARTNER)} for bot in BOTS}
    overall = {c.key: score(frame[frame["strategy"] == c.key], ["recall@1"], n_boot=0) for c in (BASE, PARTNER)}
    return tune_knobs(frame, [BASE, PARTNER], {bot: BASE for bot in BOTS}, per_bot, overall, settings,
                      metric="recall@1", k=5, n_boot=500, seed=0)


def test_a_knob_is_kept_only_where_the_champion_rule_switches() -> None:
    result = _knobs(_dev_frame(), KnobSettings(precision_target=0.9))
    assert set(result.kept) == {"pizza_delivery", "card_support"}
    pizza, card, parcel = (result.report[bot] for bot in ("pizza_delivery", "card_support", "parcel_tracking"))
    # the blend: every weight wins on pizza_delivery, the best-first one switches, the others then do not beat it
    assert pizza["blend"]["partner"] == PARTNER.key and pizza["blend"]["kept"] == 0.25
    assert [t["switch"] for t in pizza["blend"]["tried"]] == [True, False, False]
    assert pizza["blend"]["tried"][0]["paired"]["low"] > 0 and pizza["dev"]["recall@1"] == 1.0
    assert pizza["threshold"]["reason"].startswith("no threshold: precision@1 is 1.000 without one")
    # card_support keeps no blend (a blend is at best as good as the base) but a threshold at the sure turns' share
    assert card["blend"]["kept"] is None and not any(t["switch"] for t in card["blend"]["tried"])
    assert card["threshold"]["kept"] and card["threshold"]["threshold"] == pytest.approx(1.0 / 1.1)
    assert card["threshold"]["with"] == {"precision@1": 1.0, "coverage": 0.5, "recall@1": 0.5}
    assert card["threshold"]["paired"]["low"] > 0
    assert card["kept"] == {"partner": None, "blend": 0.0, "threshold": pytest.approx(1.0 / 1.1)}
    assert parcel["kept"] is None and parcel["summary"].startswith("none kept: no blend: no weight's")

    # one shared champion for the three chatbots (they share the base): the knobs of two, the base for the third
    champions = result.champions
    assert all(champions[bot] is champions["pizza_delivery"] for bot in BOTS)
    params = champions["pizza_delivery"].params
    assert champions["pizza_delivery"].strategy == "adapted"
    assert params["base"] == BASE.champion().as_dict() and params["partners"] == {"bm25": PARTNER.champion().as_dict()}
    assert params["per_chatbot"] == {"pizza_delivery": {"partner": "bm25", "blend": 0.25},
                                     "card_support": {"threshold": pytest.approx(1.0 / 1.1)}}
    # the final dev predictions are the knobs' ones: card_support's unsure turns get no suggestion
    final = result.predictions
    assert set(final["strategy"]) == {CHAMPIONS}
    card_rows = final[final["chatbot"] == "card_support"]
    assert (card_rows["suggested_texts"].map(len) == 0).sum() == len(card_rows) / 2


def test_a_threshold_that_costs_too_much_coverage_is_not_kept() -> None:
    result = _knobs(_dev_frame(), KnobSettings(blend=(), precision_target=0.9, min_coverage=0.6))
    assert result.kept == {} and all(c.strategy == "tfidf" for c in result.champions.values())  # no wrapper
    reason = result.report["card_support"]["threshold"]["reason"]
    assert "leaves coverage 0.500 < min_coverage 0.6" in reason
    assert result.report["pizza_delivery"]["blend"]["reason"] == "no blend: the task lists no blend weights"


def test_a_threshold_whose_gain_may_be_chance_is_not_kept() -> None:
    # card_support, three conversations of (top share, hit): c0 two sure hits, c1 an unsure miss, c2 two unsure
    # hits. Threshold 0.91 takes precision@1 from 0.8 to 1.0, but a draw without c1 gains nothing: the interval
    # reaches 0.
    sure_hit, unsure_hit, unsure_miss = [("t", 1.0), ("w", 0.1)], [("t", 0.55), ("w", 0.45)], [("w", 0.55), ("t", 0.45)]
    turns = {"c0": [sure_hit, sure_hit], "c1": [unsure_miss], "c2": [unsure_hit, unsure_hit]}
    frame = predictions_frame([
        prediction_row(strategy=candidate.key, chatbot=bot, conversation_id=f"{bot}-{conv}", turn_index=i,
                       truth_label="t", truth_text="T", latency_ms=1.0,
                       suggestions=[Suggestion(label.upper(), s, label) for label, s in items])
        for bot in BOTS for candidate in (BASE, PARTNER) for conv, lists in turns.items()
        for i, items in enumerate(lists)])
    result = _knobs(frame, KnobSettings(blend=(), precision_target=0.9, min_coverage=0.3))
    threshold = result.report["card_support"]["threshold"]
    assert threshold["without"]["precision@1"] == 0.8 and threshold["with"]["precision@1"] == 1.0
    assert threshold["paired"]["low"] <= 0 < threshold["paired"]["diff"]
    assert not threshold["kept"] and "contains 0" in threshold["reason"] and result.kept == {}


@pytest.fixture(scope="module")
def splits(sample_path: Path) -> dict[str, Dataset]:
    return split_dataset(load_dataset(sample_path), seed=0)


def test_the_shared_champion_is_fitted_once_by_evaluation_and_export(splits: dict[str, Dataset], tmp_path: Path,
                                                                     mlflow_uri: str) -> None:
    from copilot.serving.export import export_champions, load_model_version, predict_suggestions

    champions = _knobs(_dev_frame(), KnobSettings(precision_target=0.9)).champions
    task = load_task(ROOT / "evals/sample.yaml", only=["tfidf"])
    tuned = load_task(write_tuned_task(task, champions, tmp_path / "tuned.yaml"), only=["tfidf"])
    assert tuned.champions == champions  # through the task file and back

    task_tfidf = make_strategy("tfidf").fit(splits["train"])  # what evaluate fitted for the task's strategy
    fitted: dict[str, Any] = {_key("tfidf", task_tfidf.get_params()): task_tfidf}
    frame = champions_predictions(tuned.champions, train=splits["train"], test=splits["test"], k=5, fitted=fitted)
    assert len(fitted) == 2  # three chatbots, one adapted fit (its partner fitted inside it, once)
    adapted = fitted[_key("adapted", champions["pizza_delivery"].params)]
    assert adapted.base_ is task_tfidf  # the base the evaluation had fitted already is taken, not fitted again
    assert set(adapted.partners_) == {"bm25"}
    assert set(frame["chatbot"]) == set(BOTS)
    assert (frame[frame["chatbot"] == "card_support"]["suggested_texts"].map(len) == 0).any()

    as_files = {bot: c.as_dict() for bot, c in tuned.champions.items()}
    exported = export_champions(as_files, splits["train"], mlflow_uri)
    assert [e.chatbot for e in exported] == sorted(BOTS)
    assert len({e.run_id for e in exported}) == 1  # one fitted model logged once, three registered versions
    from mlflow import MlflowClient

    model = load_model_version(MlflowClient(tracking_uri=mlflow_uri), mlflow_uri, exported[0].name,
                               exported[0].version)
    contexts = [c for conv in splits["test"].conversations for _, c in contexts_for(conv)]
    served = [predict_suggestions(model, c, 5) for c in contexts]
    assert served == adapted.suggest_many(contexts, 5)  # what the server loads answers as evaluated


def test_tune_records_every_knob_tried_on_the_sample(splits: dict[str, Dataset], tmp_path: Path) -> None:
    task = load_task(ROOT / "evals/sample.yaml", only=["tfidf", "bm25"])
    task = replace(task, knobs=KnobSettings(precision_target=0.8))
    result = tune(task, train=splits["train"], dev=splits["dev"], out_dir=tmp_path, progress=False)
    report = json.loads((tmp_path / "tuning.json").read_text())
    assert report["knobs"]["settings"] == {"blend": [0.25, 0.5, 0.75], "partner": None, "precision_target": 0.8,
                                           "min_coverage": 0.5, "depth": 5}
    assert set(report["knobs"]["kept"]) | set(report["knobs"]["none_kept"]) == set(BOTS)
    for bot in BOTS:
        knobs = report["per_chatbot"][bot]["knobs"]
        tried = knobs["blend"]["tried"]
        assert knobs["blend"]["partner"].startswith("bm25(") and len(tried) == 3  # the other family, each weight
        assert all(t["reason"] and "recall@1" in t["dev"] for t in tried)
        assert knobs["threshold"]["searched"] and knobs["threshold"]["reason"]
        if bot in report["knobs"]["kept"]:  # a kept blend switched under the champion rule; a threshold's gain too
            assert knobs["blend"]["kept"] is None or any(t["switch"] for t in tried)
            assert knobs["threshold"]["kept"] is False or knobs["threshold"]["paired"]["low"] > 0
        else:
            assert report["knobs"]["none_kept"][bot].startswith("none kept: ")
            assert result.champion_settings()[bot] == result.champions[bot].champion()


def test_the_task_file_sets_the_knobs(tmp_path: Path) -> None:
    from copilot.evaluation.tasks import TaskError

    path = tmp_path / "task.yaml"
    path.write_text("strategies:\n  - {name: tfidf}\n  - {name: bm25}\n")
    assert load_task(path).knobs == KnobSettings(blend=(0.25, 0.5, 0.75), partner=None, precision_target=None,
                                                 min_coverage=0.5)
    path.write_text("strategies:\n  - {name: tfidf}\n  - {name: bm25}\n"
                    "knobs: {blend: [0.5], partner: bm25, precision_target: 0.85, min_coverage: 0.6}\n")
    assert load_task(path).knobs == KnobSettings((0.5,), "bm25", 0.85, 0.6)
    (tmp_path / "variant.yaml").write_text("include: task.yaml\nknobs: {blend: []}\n")  # merged key by key
    assert load_task(tmp_path / "variant.yaml").knobs == KnobSettings((), "bm25", 0.85, 0.6)
    for bad, message in (("{blends: [0.5]}", "did you mean 'blend'"), ("{blend: [1.5]}", "weights in \\(0, 1\\]"),
                         ("{precision_target: 2}", "precision_target"), ("{partner: bm52}", "did you mean 'bm25'")):
        path.write_text(f"strategies:\n  - {{name: tfidf}}\n  - {{name: bm25}}\nknobs: {bad}\n")
        with pytest.raises(TaskError, match=message):
            load_task(path)
