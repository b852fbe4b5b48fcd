"""Shared fixtures. Real files, real servers; see each fixture for what it provides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workbench_testing import Evaluation, make_evaluation

from copilot.data.records import Dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "conversations.jsonl"


def _star_dir() -> Path | None:
    value = os.environ.get("COPILOT_TEST_STAR_DIR") or os.environ.get("COPILOT_STAR_DIR")
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


@pytest.fixture
def evaluation() -> Evaluation:
    return make_evaluation()


@pytest.fixture(scope="session")
def star_splits(star_dir: Path) -> dict[str, Dataset]:
    """STAR imported from where it lies and split by conversation with seed 0 (the split of evals/star.yaml)."""
    from copilot.data.importers.star import import_star
    from copilot.data.splits import split_dataset

    dataset, _ = import_star(star_dir)
    return dict(split_dataset(dataset, seed=0))
