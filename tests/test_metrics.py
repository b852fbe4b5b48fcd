"""Metrics on hand-built predictions tables, with the expected values worked out by hand in each test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from copilot.data.context import Suggestion
from copilot.data.predictions import prediction_row, predictions_frame
from copilot.evaluation.metrics import (
    METRICS,
    SEMANTIC_THRESHOLD,
    decide_winner,
    metric_value,
    paired_comparison,
    paired_interval,
    ratio_difference_interval,
    score,
    semantic_hits,
    summarize,
)
from copilot.registry import UnknownNameError


def _row(strategy: str, chatbot: str, conv: str, turn: int, truth: str | None, labels: list[str],
         latency: float = 1.0, tokens: int = 0, truth_text: str = "t") -> dict[str, object]:
    return prediction_row(strategy=strategy, chatbot=chatbot, conversation_id=conv, turn_index=turn,
                          truth_label=truth, truth_text=truth_text,
                          suggestions=[Suggestion(f"text of {x}", 1.0, x) for x in labels],
                          latency_ms=latency, tokens=tokens)


def _tiny(strategy: str = "s") -> pd.DataFrame:
    return predictions_frame([
        _row(strategy, "A", "c1", 1, "x", ["x", "y", "z"], latency=10, tokens=4),  # rank 1
        _row(strategy, "A", "c1", 3, "y", ["x", "z", "y", "w"], latency=20),  # rank 3
        _row(strategy, "A", "c2", 1, "z", ["a", "b", "c", "d", "e"], latency=30),  # absent
        _row(strategy, "A", "c2", 3, None, ["a"], latency=40, tokens=8),  # free text: not in recall
        _row(strategy, "B", "c3", 1, "q", ["p", "q"], latency=50),  # rank 2
        _row(strategy, "B", "c3", 3, "q", [], latency=60),  # nothing suggested
    ])


def test_recall_and_mrr_by_hand() -> None:
    summary = summarize(_tiny(), n_boot=200, seed=1)
    assert set(summary) == {"overall", "per_chatbot"}
    overall = summary["overall"]["s"]
    # five labelled turns with ranks 1, 3, absent, 2, absent
    assert overall["n_turns"] == 5
    assert overall["recall@1"] == pytest.approx(1 / 5)
    assert overall["recall@3"] == pytest.approx(3 / 5)
    assert overall["recall@5"] == pytest.approx(3 / 5)
    assert overall["mrr"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 2 + 0) / 5)
    assert overall["coverage"] == pytest.approx(5 / 6)
    assert overall["tokens"] == pytest.approx(12 / 6)
    assert overall["latency_p50"] == pytest.approx(35.0)
    assert overall["latency_p95"] == pytest.approx(57.5)  # numpy's linear interpolation between 50 and 60
    a, b = summary["per_chatbot"]["A"]["s"], summary["per_chatbot"]["B"]["s"]
    assert (a["n_turns"], a["recall@1"], a["mrr"]) == (3, pytest.approx(1 / 3), pytest.approx((1 + 1 / 3) / 3))
    assert (b["n_turns"], b["recall@1"], b["recall@3"], b["mrr"]) == (2, 0.0, 0.5, 0.25)
    for name in ("recall@1", "recall@3", "recall@5", "mrr"):
        assert overall[f"{name}_low"] <= overall[name] <= overall[f"{name}_high"]


def test_precision_counts_only_turns_with_a_suggestion_and_recall_counts_them_as_misses() -> None:
    scores = score(_tiny(), ["recall@1", "precision@1", "coverage"], n_boot=200, seed=1)
    # labelled turns with a suggestion: c1/1 hit, c1/3 rank 3, c2/1 absent, c3/1 rank 2 (c3/3 got none)
    assert scores["precision@1"] == pytest.approx(1 / 4)
    assert scores["recall@1"] == pytest.approx(1 / 5)  # c3/3, with nothing suggested, is a miss
    assert scores["coverage"] == pytest.approx(5 / 6)  # every agent turn, free ones too
    assert scores["precision@1_low"] <= scores["precision@1"] <= scores["precision@1_high"]
    hidden = predictions_frame([_row("s", "A", "c1", 1, "x", []), _row("s", "A", "c1", 3, None, ["a"])])
    nothing = score(hidden, ["recall@1", "precision@1", "coverage"], n_boot=50)
    assert (nothing["recall@1"], nothing["precision@1"], nothing["coverage"]) == (0.0, None, 0.5)


def test_suggestion_scores_travel_in_the_table() -> None:
    from copilot.data.predictions import row_suggestions

    row = prediction_row(strategy="s", chatbot="A", conversation_id="c", turn_index=1, truth_label="x",
                         truth_text="t", suggestions=[Suggestion("a", 0.75, "x"), Suggestion("free", 0.25)],
                         latency_ms=1.0)
    assert row["suggested_scores"] == [0.75, 0.25]
    assert row_suggestions(row) == [Suggestion("a", 0.75, "x"), Suggestion("free", 0.25)]
    older = {k: v for k, v in row.items() if k != "suggested_scores"}  # a table written before the column
    assert [s.label for s in row_suggestions(older)] == ["x", None]
    assert all(np.isnan(s.score) for s in row_suggestions(older))


def test_difference_of_two_ratios_by_hand() -> None:
    # three conversations; b drops the turns of conversation 2 (all misses) from the denominator
    hits_a, turns_a = np.array([2.0, 1.0, 0.0]), np.array([2.0, 2.0, 2.0])
    hits_b, turns_b = np.array([2.0, 1.0, 0.0]), np.array([2.0, 2.0, 0.0])
    paired = ratio_difference_interval(hits_a, turns_a, hits_b, turns_b, n_boot=500, seed=0)
    assert paired.diff == pytest.approx(3 / 4 - 3 / 6)
    assert paired.low <= paired.diff <= paired.high and paired.n_conversations == 3
    same = ratio_difference_interval(hits_a, turns_a, hits_a, turns_a, n_boot=200, seed=0)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)


def test_intervals_contain_the_estimate_and_are_deterministic_by_seed() -> None:
    rng = np.random.default_rng(7)
    rows = [_row("s", "A", f"c{c}", t, "x", ["x"] if rng.random() < 0.4 else ["y"])
            for c in range(40) for t in range(int(rng.integers(1, 6)))]
    frame = predictions_frame(rows)
    first = score(frame, ["recall@1", "mrr"], n_boot=500, seed=3)
    assert first == score(frame, ["recall@1", "mrr"], n_boot=500, seed=3)
    assert first != score(frame, ["recall@1", "mrr"], n_boot=500, seed=4)
    assert first["recall@1_low"] < first["recall@1"] < first["recall@1_high"]


def test_bootstrap_resamples_conversations_not_turns() -> None:
    # One conversation with 100 hits and ten one-turn conversations that miss. Drawing eleven conversations,
    # the big one is left out with probability (10/11)**11 ≈ 0.35, so the lower bound is 0. Resampling the
    # 110 turns one by one would give a narrow interval around 100/110 ≈ 0.91 instead.
    rows = [_row("s", "A", "big", t, "x", ["x"]) for t in range(100)]
    rows += [_row("s", "A", f"small{i}", 0, "x", ["y"]) for i in range(10)]
    value, low, high = metric_value(predictions_frame(rows), "recall@1", n_boot=1000, seed=0)
    assert value == pytest.approx(100 / 110)
    assert low == 0.0
    assert high > 0.9


def test_paired_comparison_of_a_strategy_with_itself_is_exactly_zero() -> None:
    paired = paired_comparison(_tiny("a"), _tiny("b"), "recall@3", n_boot=300, seed=0)
    assert (paired.diff, paired.low, paired.high) == (0.0, 0.0, 0.0)
    assert (paired.n_turns, paired.n_conversations) == (5, 3)


def test_paired_comparison_by_hand() -> None:
    worse = _tiny("a")
    better = _tiny("b")
    better.at[2, "suggested_labels"] = ["z"]  # the miss in c2 becomes a hit at rank 1
    paired = paired_comparison(worse, better, "recall@1", n_boot=300, seed=0)
    assert paired.diff == pytest.approx(1 / 5)
    assert paired.low <= paired.diff <= paired.high


def test_semantic_match_with_constructed_texts() -> None:
    from copilot.strategies.embeddings import Embedder

    embedder = Embedder()
    truth = ["What is your order number?", "What is your order number?"]
    suggested = [["What is the weather like in Paris tomorrow?", "Could you tell me your order number, please?"],
                 ["What is the weather like in Paris tomorrow?"]]
    # cosine ≈ 0.91 for the paraphrase, ≈ 0.15 for the weather; the threshold is 0.7
    assert SEMANTIC_THRESHOLD == 0.7
    assert semantic_hits(truth, suggested, embedder, k=1).tolist() == [0.0, 0.0]
    assert semantic_hits(truth, suggested, embedder, k=3).tolist() == [1.0, 0.0]
    frame = predictions_frame([
        prediction_row(strategy="s", chatbot="A", conversation_id="c", turn_index=i, truth_label=None,
                       truth_text=t, suggestions=[Suggestion(x, 1.0) for x in s], latency_ms=1)
        for i, (t, s) in enumerate(zip(truth, suggested, strict=True))
    ])
    scores = summarize(frame, n_boot=50, embedder=embedder)["overall"]["s"]
    assert (scores["semantic@1"], scores["semantic@3"], scores["n_free_turns"]) == (0.0, 0.5, 2)
    assert scores["recall@1"] is None and scores["n_turns"] == 0  # no labelled turn: nothing to count


def _conversations(n: int, per: int) -> list[str]:
    return [f"c{i}" for i in range(n) for _ in range(per)]


def test_w5_clear_win_switches() -> None:
    convs = _conversations(20, 3)
    decision = decide_winner(np.zeros(60), np.ones(60), convs, n_boot=500)
    assert decision.switch and decision.paired.diff == 1.0 and decision.reason.startswith("switch")


def test_w5_overlapping_interval_keeps_the_champion() -> None:
    convs = _conversations(20, 3)
    champion = np.tile([1.0, 0.0, 1.0], 20)
    challenger = champion.copy()
    challenger[1] = 1.0  # one turn better out of 60: the interval reaches 0
    decision = decide_winner(champion, challenger, convs, n_boot=500)
    assert not decision.switch
    assert decision.paired.low <= 0 <= decision.paired.high and "contains 0" in decision.reason


def test_w5_worse_challenger_keeps_the_champion() -> None:
    convs = _conversations(20, 3)
    decision = decide_winner(np.ones(60), np.zeros(60), convs, n_boot=500)
    assert not decision.switch and "worse" in decision.reason


def test_w5_lower_is_better_metric() -> None:
    convs = _conversations(20, 3)
    rng = np.random.default_rng(0)
    champion = 100 + rng.random(60)  # e.g. latency in ms
    challenger = 50 + rng.random(60)
    assert decide_winner(champion, challenger, convs, higher_is_better=False, n_boot=500).switch
    assert not decide_winner(challenger, champion, convs, higher_is_better=False, n_boot=500).switch
    assert not decide_winner(champion, challenger, convs, higher_is_better=True, n_boot=500).switch


def test_paired_interval_resamples_conversations() -> None:
    # the whole difference sits in one conversation of eleven: left out in about a third of the draws
    convs = ["big"] * 100 + [f"s{i}" for i in range(10)]
    a = np.zeros(110)
    b = np.concatenate([np.ones(100), np.zeros(10)])
    paired = paired_interval(a, b, convs, n_boot=1000, seed=0)
    assert paired.low == 0.0 and paired.n_conversations == 11


def test_metric_registry() -> None:
    assert {"recall@1", "recall@3", "recall@5", "mrr", "semantic@1", "semantic@3", "coverage", "precision@1",
            "latency_p50", "latency_p95", "tokens"} <= set(METRICS.names())
    assert METRICS.get("mrr").higher_is_better and not METRICS.get("latency_p95").higher_is_better
    with pytest.raises(UnknownNameError, match="did you mean 'recall@1'"):
        METRICS.get("recal@1")
