"""Workbench settings: one frozen object built from the environment (prefix ``COPILOT_``), passed down explicitly.

Nothing here reads the environment at import time; :meth:`Settings.from_env` does, when a command starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

PREFIX = "COPILOT_"


@dataclass(frozen=True)
class Settings:
    """Where the workbench reads and writes.

    Attributes:
        star_dir: the raw STAR folder (``COPILOT_STAR_DIR``); None means: use the sample data.
        work_dir: generated data (imports, splits, replays), git-ignored (``COPILOT_WORK_DIR``).
        sample_path: the project's own small sample dataset.
        mlflow_tracking_uri: ``MLFLOW_TRACKING_URI``; default a SQLite file in the project.
        cache_dir: caches such as embeddings (``COPILOT_CACHE_DIR``).
    """

    star_dir: Path | None = None
    work_dir: Path = Path("data/generated")
    sample_path: Path = Path("data/sample/conversations.jsonl")
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    cache_dir: Path = Path("data/cache")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        base = cls()
        star = env.get(f"{PREFIX}STAR_DIR") or None
        return replace(
            base,
            star_dir=Path(star) if star else None,
            work_dir=Path(env.get(f"{PREFIX}WORK_DIR") or base.work_dir),
            sample_path=Path(env.get(f"{PREFIX}SAMPLE_PATH") or base.sample_path),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or base.mlflow_tracking_uri,
            cache_dir=Path(env.get(f"{PREFIX}CACHE_DIR") or base.cache_dir),
        )
