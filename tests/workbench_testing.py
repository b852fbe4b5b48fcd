"""Constructed data of the workbench tests, in the shapes the other parts produce: an evaluation (the per-turn
predictions table, summary.json, each strategy's params), a replay's handoff.json, a champion-vs-global table and
a tuning.json with the knobs kept per chatbot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from copilot.data.context import Suggestion


@dataclass
class Evaluation:
    """A small evaluation in the shapes the evaluation produces: the per-turn predictions table, summary.json and
    each strategy's params."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    params: dict[str, dict[str, Any]]


def make_evaluation(chatbots: tuple[str, ...] = ("bank", "weather"),
                    strategies: tuple[str, ...] = ("tfidf(ngram_range=(1, 2))", "bm25(k1=1.2)"),
                    turns: int = 12, seed: int = 0) -> Evaluation:
    """Constructed, seeded data: each strategy ranks the agent's real template first, second or not at all."""
    from copilot.data.predictions import prediction_row, predictions_frame

    rng = np.random.default_rng(seed)
    rows = []
    for chatbot in chatbots:
        for s_index, strategy in enumerate(strategies):
            for turn in range(turns):
                truth = f"template_{turn % 4}"
                others = [f"template_{(turn + i) % 4 + 4}" for i in range(1, 3)]
                skill = s_index % 3
                rank = rng.choice([0, 1, 2], p=[0.6 - 0.2 * skill, 0.2, 0.2 + 0.2 * skill])  # 2: not suggested
                labels = [*others[:rank], truth, *others[rank:]] if rank < 2 else [*others, "template_9"]
                rows.append(prediction_row(
                    strategy=strategy, chatbot=chatbot, conversation_id=f"{chatbot}-{turn // 3}", turn_index=turn,
                    truth_label=truth, truth_text=f"reply {truth}",
                    suggestions=[Suggestion(f"reply {label}", 1.0 - i / 10, label) for i, label in enumerate(labels)],
                    latency_ms=float(rng.lognormal(1 + skill, 0.5)), tokens=0))
    frame = predictions_frame(rows)

    def metrics(rows: pd.DataFrame) -> dict[str, float]:
        hits = [label in list(labels[:1]) for label, labels in zip(rows["truth_label"], rows["suggested_labels"],
                                                                   strict=True)]
        r1 = float(np.mean(hits))
        out: dict[str, float] = {"n_turns": float(len(rows))}
        for name, value in (("recall@1", r1), ("recall@3", min(1.0, r1 + 0.3)), ("recall@5", min(1.0, r1 + 0.35)),
                            ("mrr", min(1.0, r1 + 0.15))):
            out[name], out[f"{name}_low"], out[f"{name}_high"] = value, max(0.0, value - 0.2), min(1.0, value + 0.2)
        return out

    summary: dict[str, Any] = {
        "overall": {s: metrics(g) for s, g in frame.groupby("strategy", sort=False)},
        "per_chatbot": {c: {s: metrics(g) for s, g in rows.groupby("strategy", sort=False)}
                        for c, rows in frame.groupby("chatbot", sort=False)},
    }
    summary["overall"]["champions"] = dict(summary["overall"][strategies[0]])
    params = {strategy: {"name": strategy.split("(")[0], "k": 3, "nested": {"x": [1, 2]}} for strategy in strategies}
    return Evaluation(frame, summary, params)


HANDOFF: dict[str, Any] = {
    "conversations": 10, "completed": 9, "errors": ["conversation bank-3: no suggestions within 10 s"],
    "escalation_to_notification_ms": {"p50": 4.2, "p99": 19.0}, "claim_ms": {"p50": 8.0, "p99": 30.0},
    "first_agent_reply_ms": {"p50": 1200.0, "p99": 5000.0}, "suggestion_ms": {"p50": 40.0, "p99": 180.0},
    "claim_losers": 3,
}


def champions_vs_global() -> pd.DataFrame:
    return pd.DataFrame({
        "chatbot": ["bank", "weather"], "champion": ["tfidf(ngram_range=(1, 2))", "bm25(k1=1.2)"],
        "champion_recall@1": [0.6, 0.5], "champion_recall@1_low": [0.4, 0.3], "champion_recall@1_high": [0.8, 0.7],
        "global": ["tfidf(ngram_range=(1, 2))"] * 2,
        "global_recall@1": [0.6, 0.4], "global_recall@1_low": [0.4, 0.2], "global_recall@1_high": [0.8, 0.6],
    })


def with_champions(frame: pd.DataFrame) -> pd.DataFrame:
    """The table plus ``champions`` rows (the first strategy's, renamed), as an evaluation of a tuned task has."""
    first = frame[frame["strategy"] == frame["strategy"].iloc[0]].assign(strategy="champions")
    return pd.concat([frame, first], ignore_index=True)


TUNING: dict[str, Any] = {"per_chatbot": {
    "bank": {"knobs": {"base": "tfidf(ngram_range=(1, 2))", "summary": "blend 0.5 with bm25(k1=1.2); threshold 0.4200",
                       "kept": {"partner": "bm25(k1=1.2)", "blend": 0.5, "threshold": 0.42, "partner_name": "bm25"}}},
    "weather": {"knobs": {"base": "tfidf(ngram_range=(1, 2))", "kept": None,
                          "summary": "none kept: no blend: no weight's paired interval excluded 0; "
                                     "not searched: the task sets no knobs.precision_target"}},
}}
