"""Shared fixtures. Real files, real servers; see each fixture for what it provides."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from copilot.context import Suggestion

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "conversations.jsonl"


def _star_dir() -> Path | None:
    value = os.environ.get("COPILOT_STAR_DIR")
    candidates = [Path(value)] if value else []
    candidates.append(ROOT.parent / "shared" / "data" / "star")
    for path in candidates:
        if (path / "tasks").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def star_dir() -> Path:
    """The raw STAR folder, read where it lies (never copied). Skips the test when it is not on this machine."""
    path = _star_dir()
    if path is None:
        pytest.skip("STAR is not on this machine (set COPILOT_STAR_DIR)")
    return path


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow SQLite store for the whole test session (its first creation takes several seconds)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema once
    return uri


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
    from copilot.predictions import prediction_row, predictions_frame

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


@pytest.fixture
def evaluation() -> Evaluation:
    return make_evaluation()
