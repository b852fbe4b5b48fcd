"""Files the workbench writes and reads: atomic writes, JSON documents, and provenance (hashes, the git commit).

A reader (a notebook, the server, a second process) never sees half a file: everything is written to a temporary
file beside the target and renamed over it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO


def _write_atomic(path: str | os.PathLike[str], write: Callable[[TextIO], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``: all or nothing. The file
    gets the mode a plain ``open()`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_lines_atomic(path: str | os.PathLike[str], lines: Iterable[str]) -> Path:
    """Write ``lines``, each followed by a newline, to ``path`` atomically (streamed: a large dataset is never held
    as one string). Returns the path."""

    def write(fh: TextIO) -> None:
        for line in lines:
            fh.write(line)
            fh.write("\n")

    return _write_atomic(path, write)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as it is to ``path`` atomically. Returns the path."""
    return _write_atomic(path, lambda fh: fh.write(text))


def write_json(path: str | os.PathLike[str], document: Any, *, default: Callable[[Any], Any] | None = str,
               allow_nan: bool = True, sort_keys: bool = False) -> Path:
    """Write ``document`` as indented JSON (two spaces, a final newline) to ``path`` atomically.

    Args:
        default: how values JSON does not know are written (``str``: as their text; None: refused).
        allow_nan: False refuses NaN and infinities instead of writing tokens that strict readers reject.
    """
    return write_text_atomic(path, json.dumps(document, indent=2, default=default, allow_nan=allow_nan,
                                              sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in ``path``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, so that a run or a report names exactly the data it saw."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(root: str | os.PathLike[str] | None = None) -> str:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or ``unknown`` outside git."""
    try:
        cwd = str(root) if root else None
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
