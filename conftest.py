"""Session-wide test environment, set before any test or notebook kernel starts.

The notebooks run under nbval in their own kernels, which inherit this process's environment: pointing the work,
report and cache folders and the MLflow store at a temporary folder keeps a test run from touching the project's own
``data/generated``, ``reports`` and ``mlflow.db``. ``COPILOT_STAR_DIR`` is unset so that the notebooks run on the
sample, as CI expects (the STAR tests find the folder through the ``star_dir`` fixture instead).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP: tempfile.TemporaryDirectory[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _TMP
    _TMP = tempfile.TemporaryDirectory(prefix="copilot-tests-")
    root = Path(_TMP.name)
    shared_cache = Path(__file__).resolve().parent / "data" / "cache"
    os.environ["COPILOT_WORK_DIR"] = str(root / "generated")
    os.environ["COPILOT_REPORTS_DIR"] = str(root / "reports")
    # embeddings are content-addressed: sharing the project's cache is safe and saves minutes
    os.environ.setdefault("COPILOT_CACHE_DIR", str(shared_cache))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    star = os.environ.pop("COPILOT_STAR_DIR", None)
    if star:
        os.environ.setdefault("COPILOT_TEST_STAR_DIR", star)  # for the star_dir fixture (tests/conftest.py)
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                       "TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TMP is not None:
        _TMP.cleanup()
