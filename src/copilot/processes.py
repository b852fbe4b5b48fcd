"""Servers run as child processes: start one, wait for the line that names its URL, stop it.

``handoff serve --port 0`` prints its URL once it serves (after loading its champions); the local llama.cpp server
(uvicorn) logs ``Uvicorn running on http://...`` once its model is loaded. The replay, the LLM strategy's local
server, the tests and the benchmarks all start servers this way, through :func:`start_url_process`.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LOOPBACK_URL = r"http://127\.0\.0\.1:\d+"
TAIL_CHARS = 4000


class ProcessStartError(RuntimeError):
    """The child process exited, or printed no URL in time; the message quotes the end of its output."""


class ServerProcess:
    """A started child process and the URL it printed. Its output keeps being read (so a chatty server never blocks
    on a full pipe) and the last :data:`TAIL_CHARS` characters are kept for error messages (:meth:`tail`)."""

    def __init__(self, proc: subprocess.Popen[str], url: str, reader: threading.Thread,
                 tail: collections.deque[str]) -> None:
        self.proc = proc
        self.url = url
        self._reader = reader
        self._tail = tail

    def tail(self) -> str:
        """The end of what the process printed so far."""
        return "".join(self._tail)[-TAIL_CHARS:]

    def cpu_s(self) -> float | None:
        """CPU seconds the process has used so far (Linux /proc), None where unknown."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, and SIGKILL if it has not exited after ``timeout_s``; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return int(self.proc.returncode or 0)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crash or an OOM kill does)."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)


def _read(stream: queue.Queue[str | None], served: threading.Event, proc: subprocess.Popen[str],
          tail: collections.deque[str]) -> None:
    """In a thread: every line of the child's output into ``tail``, and into ``stream`` until ``served`` is set;
    None at the end."""
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            tail.append(line)
            if not served.is_set():
                stream.put(line)
    except (OSError, ValueError):  # the pipe was closed under us
        pass
    finally:
        stream.put(None)
        proc.stdout.close()


def start_url_process(command: Sequence[str], *, env: Mapping[str, str] | None = None,
                      url_pattern: str = LOOPBACK_URL, timeout_s: float = 120.0,
                      merge_stderr: bool = False) -> ServerProcess:
    """Start ``command`` and return once a line of its output matches ``url_pattern`` (the URL it serves on).

    Args:
        env: the child's whole environment (default: this process's).
        timeout_s: how long to wait for the URL before the child is killed.
        merge_stderr: read the URL from stderr too (uvicorn logs there); otherwise stderr is inherited.

    Raises:
        ProcessStartError: the child exited first or printed no URL within ``timeout_s``.
    """
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True, errors="replace",
                            stderr=subprocess.STDOUT if merge_stderr else None, stdin=subprocess.DEVNULL,
                            env=dict(env) if env is not None else None)
    tail: collections.deque[str] = collections.deque(maxlen=200)
    stream: queue.Queue[str | None] = queue.Queue()
    served = threading.Event()
    reader = threading.Thread(target=_read, args=(stream, served, proc, tail), daemon=True,
                              name=f"output of {Path(command[0]).name}")
    reader.start()
    started = ServerProcess(proc, "", reader, tail)
    pattern = re.compile(url_pattern)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            line = stream.get(timeout=max(deadline - time.monotonic(), 0.001))
            if line is None:
                raise ProcessStartError(f"{command[-1]!r} exited with {proc.wait()} before it served:\n"
                                        f"{started.tail()}")
            match = pattern.search(line)
            if match is not None:
                break
    except queue.Empty:
        started.kill()
        raise ProcessStartError(f"{command[-1]!r} printed no URL within {timeout_s} s:\n{started.tail()}") from None
    except BaseException:
        started.kill()
        raise
    served.set()  # from now on the thread only drains the pipe into the tail
    started.url = match.group(0)
    return started
