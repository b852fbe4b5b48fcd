"""Replay: recorded conversations through the full running handoff server, as its real clients would.

:func:`replay` runs a :class:`~copilot.live.replayer.Replayer` (the bot, the customers and the racing agents of
each chatbot) over a dataset; :func:`run_replay` does it against a given server or one started here
(:func:`start_server`: ``handoff serve`` with a fresh SQLite database) and writes the results.

The server's context for a suggestion is ``context_from_events`` over the stored messages and tool events, which
the replay makes identical to the offline context (``copilot.data.context.contexts_for``) of that agent turn: same
turns, same labels, the same lookups at their place. So a replay with a champion exported from a fitted strategy
reproduces that strategy's offline evaluation exactly (tests/test_replay.py).

Outputs (:func:`run_replay`): ``turns.parquet`` (predictions columns plus ``for_seq``, ``agent_id`` and
``suggestions_received``; ``latency_ms`` is the time from the message, lookup or claim to its suggestions),
``handoff.json`` (completion, errors, latency percentiles, claim races, tool events posted and seen by customers)
and ``summary.json`` (``copilot.evaluation.metrics.summarize`` of the turns).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pandas as pd

from copilot._io import write_json
from copilot.data.predictions import COLUMNS
from copilot.data.records import Dataset
from copilot.evaluation.metrics import summarize
from copilot.live.client import HandoffHttp
from copilot.live.protocol import EV_TOOL_EVENT
from copilot.live.replayer import ConversationResult, ReplayConfig, Replayer
from copilot.processes import ServerProcess, start_url_process

T = TypeVar("T")

REPLAY_COLUMNS = [*COLUMNS, "for_seq", "agent_id", "suggestions_received"]
#: The timings of ``handoff.json``, each with p50, p99 and n.
LATENCIES = ("escalation_to_notification_ms", "claim_ms", "first_agent_reply_ms", "suggestion_ms")


@dataclass
class ReplayResult:
    """The per-turn table (:data:`REPLAY_COLUMNS`) and ``handoff.json``'s report."""

    turns: pd.DataFrame
    handoff: dict[str, Any]


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "n": len(values)}


def handoff_report(results: Sequence[ConversationResult], elapsed_s: float) -> dict[str, Any]:
    """``handoff.json``: completion, errors, latency percentiles (ms), the claim races, and the lookups posted
    against those the customers' connections received (always none, by the protocol)."""
    losers = [r.losers for r in results if r.claim_ms is not None]
    codes: dict[str, int] = {}
    for r in results:
        for code in r.loser_codes:
            codes[code] = codes.get(code, 0) + 1
    return {
        "conversations": len(results),
        "completed": sum(r.completed for r in results),
        "errors": [{"conversation_id": r.conversation_id, "chatbot": r.chatbot, "error": r.error}
                   for r in results if r.error],
        "elapsed_s": elapsed_s,
        "conversations_per_s": len(results) / elapsed_s if elapsed_s > 0 else None,
        "agent_turns": sum(len(r.rows) for r in results),
        "suggestions_received": sum(bool(row["suggestions_received"]) for r in results for row in r.rows),
        "tool_events": {"posted": sum(r.tool_events for r in results),
                        "seen_by_customers": sum(r.customer_received.get(EV_TOOL_EVENT, 0) for r in results)},
        "escalation_to_notification_ms": _percentiles([t for r in results for t in r.notification_ms]),
        "claim_ms": _percentiles([r.claim_ms for r in results if r.claim_ms is not None]),
        "first_agent_reply_ms": _percentiles([r.first_agent_reply_ms for r in results
                                              if r.first_agent_reply_ms is not None]),
        "suggestion_ms": _percentiles([t for r in results for t in r.suggestion_ms]),
        "claim_races": {"races": len(losers), "losers_total": sum(losers),
                        "losers_per_race": {str(n): losers.count(n) for n in sorted(set(losers))},
                        "loser_codes": codes},
    }


def turns_frame(results: Sequence[ConversationResult]) -> pd.DataFrame:
    return pd.DataFrame([row for r in results for row in r.rows], columns=REPLAY_COLUMNS)


async def replay(data: Dataset, url: str, admin_key: str, config: ReplayConfig | None = None, *,
                 progress: bool = True) -> ReplayResult:
    """Replay every conversation of ``data`` through the server at ``url`` (which must not know its chatbots yet:
    the replay creates one bot per chatbot, with the chatbot's id, and its agents)."""
    config = config or ReplayConfig()
    replayer = Replayer(url, admin_key, config)
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=max(8, config.concurrency * 2))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            await replayer.setup(HandoffHttp(url, session), sorted({c.chatbot for c in data.conversations}))
            results = await replayer.replay_all(data.conversations, progress=progress)
        finally:
            await replayer.close()
    elapsed = time.perf_counter() - started
    return ReplayResult(turns_frame(results), handoff_report(results, elapsed))



# ---------------------------------------------------------------------------------------------------------------
# A server of our own


@dataclass
class StartedServer:
    """A ``handoff serve`` started for a replay: its process (and URL), its admin key, its database's folder."""

    process: ServerProcess
    admin_key: str
    folder: tempfile.TemporaryDirectory[str]

    @property
    def url(self) -> str:
        return self.process.url

    def cpu_s(self) -> float | None:
        """CPU seconds the server process has used so far (Linux /proc), None where unknown."""
        return self.process.cpu_s()

    def stop(self) -> int:
        """Stop the server (SIGTERM) and remove its database; returns its exit code."""
        try:
            return self.process.stop()
        finally:
            self.folder.cleanup()


def _code_paths() -> list[str]:
    """The folders holding ``copilot`` and ``handoff`` (found without importing the server), for PYTHONPATH."""
    paths = [str(Path(__file__).resolve().parents[2])]  # src/, above copilot/live/
    spec = importlib.util.find_spec("handoff")
    if spec is not None and spec.origin:
        paths.append(str(Path(spec.origin).resolve().parents[1]))
    return paths


def start_server(*, tracking_uri: str | None = None, suggestions_k: int = 5, champion_refresh_s: float = 30.0,
                 extra_env: Mapping[str, str] | None = None, timeout_s: float = 120.0,
                 embedding_cache_dir: str | os.PathLike[str] | None = None,
                 log_level: str = "WARNING") -> StartedServer:
    """Start ``handoff serve`` on a free port with a fresh SQLite database (and the champions of ``tracking_uri``),
    rate limits raised for a replay, the unclaimed-escalation ladder off; returns once it serves (its champions are
    loaded by then), or raises :class:`~copilot.processes.ProcessStartError` after ``timeout_s``.

    ``log_level`` is the server's (``Settings.replay_server_log_level``: ``COPILOT_REPLAY_SERVER_LOG_LEVEL``).
    """
    folder = tempfile.TemporaryDirectory(prefix="copilot-replay-")
    admin_key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_") and k != "MLFLOW_TRACKING_URI"}
    env.update({
        "PYTHONPATH": os.pathsep.join([*_code_paths(), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HANDOFF_DATABASE_URL": f"sqlite:///{folder.name}/handoff.db",
        "HANDOFF_ADMIN_KEY": admin_key,
        "HANDOFF_SQLITE_SYNCHRONOUS": "NORMAL",
        "HANDOFF_LOG_LEVEL": log_level,
        "HANDOFF_SUGGESTIONS_K": str(suggestions_k),
        "HANDOFF_CHAMPION_REFRESH_S": str(champion_refresh_s),
        "HANDOFF_RATE_LIMIT_PER_S": "1000", "HANDOFF_RATE_LIMIT_BURST": "2000",
        "HANDOFF_BOT_RATE_LIMIT_PER_S": "100000", "HANDOFF_BOT_RATE_LIMIT_BURST": "100000",
        "HANDOFF_HTTP_RATE_LIMIT_PER_S": "100000", "HANDOFF_HTTP_RATE_LIMIT_BURST": "100000",
        "HANDOFF_LADDER_RENOTIFY_AFTER_S": "off", "HANDOFF_LADDER_WAIT_NOTICE_AFTER_S": "off",
        "HANDOFF_LADDER_FALLBACK_AFTER_S": "off",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    })
    if tracking_uri:
        env["HANDOFF_MLFLOW_TRACKING_URI"] = tracking_uri
    if embedding_cache_dir is not None:
        env["HANDOFF_EMBEDDING_CACHE_DIR"] = str(embedding_cache_dir)
    env.update(extra_env or {})
    try:
        process = start_url_process([sys.executable, "-m", "handoff", "serve", "--host", "127.0.0.1", "--port", "0"],
                                    env=env, timeout_s=timeout_s)
    except BaseException:
        folder.cleanup()
        raise
    return StartedServer(process, admin_key, folder)


@contextlib.contextmanager
def started_server(**kw: Any) -> Iterator[StartedServer]:
    """:func:`start_server` as a context: the server stops at the end."""
    server = start_server(**kw)
    try:
        yield server
    finally:
        server.stop()


def select(data: Dataset, *, chatbot: str | None = None, limit: int | None = None) -> Dataset:
    """The conversations to replay: one chatbot's (or all), the first ``limit``."""
    convs = data.for_chatbot(chatbot) if chatbot else list(data.conversations)
    return data.subset(convs[:limit] if limit is not None else convs)


def summarize_turns(turns: pd.DataFrame) -> dict[str, Any]:
    """:func:`copilot.evaluation.metrics.summarize` of the turns (their predictions-table columns)."""
    return summarize(turns[COLUMNS].copy())


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from synchronous code, also where an event loop already runs (a Jupyter
    kernel): then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="copilot-replay") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_replay(data: Dataset, out: str | Path, *, server: str | None = None, admin_key: str | None = None,
               tracking_uri: str | None = None, config: ReplayConfig | None = None,
               progress: bool = True, embedding_cache_dir: str | os.PathLike[str] | None = None,
               server_log_level: str = "WARNING") -> ReplayResult:
    """Replay ``data`` through ``server`` (or a server started here and stopped after) and write
    ``turns.parquet``, ``handoff.json`` and ``summary.json`` into ``out``.

    ``embedding_cache_dir`` and ``server_log_level`` are for a started server: the embedding cache its champions
    share with the offline evaluation, and its log level.
    """
    config = config or ReplayConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if server is None:
        with started_server(tracking_uri=tracking_uri, embedding_cache_dir=embedding_cache_dir,
                            log_level=server_log_level) as started:
            result = run_sync(replay(data, started.url, started.admin_key, config, progress=progress))
    else:
        if not admin_key:
            raise ValueError("replaying through a running server needs its admin key (HANDOFF_ADMIN_KEY)")
        result = run_sync(replay(data, server, admin_key, config, progress=progress))
    result.turns.to_parquet(out / "turns.parquet", index=False)
    write_json(out / "handoff.json", result.handoff, default=None)
    write_json(out / "summary.json", summarize_turns(result.turns), default=float)
    return result
