"""The main job behind ``make demo``: everything end to end on embedded defaults.

Imports the data (STAR when ``COPILOT_STAR_DIR`` points at it, the project's sample otherwise), tunes and compares
the strategies per chatbot with MLflow logging, evaluates them on the test split, exports each chatbot's champion to
the MLflow registry, replays the test conversations through a started handoff server that serves those champions,
writes the HTML report, and prints where to look. Each stage is a function of :mod:`copilot.pipeline`, which the
notebooks and the CLI call too. Embedded defaults: SQLite for the server and for MLflow, one server process, the
local MiniLM model; no network.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from copilot import pipeline
from copilot._io import read_json, write_json
from copilot.serving.tracking import WorkbenchTracker, is_server, mlflow_ui_command
from copilot.settings import Settings


def _scores(summary: dict[str, Any], strategy: str) -> str:
    values = summary.get("overall", {}).get(strategy)
    if not values:
        return "n/a"
    return ", ".join(f"{m} {values[m]:.3f} [{values[f'{m}_low']:.3f}, {values[f'{m}_high']:.3f}]"
                     for m in ("recall@1", "recall@3") if values.get(m) is not None)


def run_demo(settings: Settings, say: Callable[[str], None] = print, replay_limit: int | None = None) -> int:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        say(f"\n== {name}")
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        say(f"-- {name}: {timings[name]} s")
        return value

    ws = stage("data", lambda: pipeline.prepare(settings, say))
    tracker = WorkbenchTracker.from_settings(settings)
    tuning = stage("tune", lambda: pipeline.tune_stage(ws, tracker))
    summary = stage("evaluate", lambda: pipeline.evaluate_stage(ws, tracker))
    exported = stage("export", lambda: pipeline.export_stage(ws, settings, say))
    replay = stage("replay", lambda: pipeline.replay_stage(ws, settings, tracker, limit=replay_limit, say=say))
    report = stage("report", lambda: pipeline.report_stage(ws, settings))
    replay_summary = read_json(ws.replay_dir / "summary.json")
    served = next(iter(replay_summary.get("overall", {})), None)
    result = {
        "data": ws.name, "workspace": str(ws.root), "wall_time_s": round(time.perf_counter() - started, 1),
        "stages_s": timings, "chatbots": len(exported),
        "global": tuning.global_candidate.key,
        "champions_test": summary["overall"].get("champions"),
        "replay": {"handoff": {k: v for k, v in replay.handoff.items() if k != "errors"},
                   "errors": len(replay.handoff.get("errors", [])),
                   "summary": replay_summary.get("overall", {}).get(served) if served else None},
        "report": str(report), "mlflow_tracking_uri": settings.mlflow_tracking_uri,
    }
    write_json(ws.root / "demo.json", result)
    say("\n== done in {:.0f} s".format(result["wall_time_s"]))
    say(f"champions on the {ws.name} test split (offline): {_scores(summary, 'champions')}")
    if served:
        say(f"the same, served by the handoff server during the replay: {_scores(replay_summary, served)}")
    say(f"replay: {replay.handoff['completed']}/{replay.handoff['conversations']} conversations completed, "
        f"{len(replay.handoff.get('errors', []))} errors")
    say(f"report:        {report}")
    if is_server(settings):
        say(f"MLflow:        {settings.mlflow_tracking_uri}")
    else:
        say(f"MLflow UI:     {shlex.join(mlflow_ui_command(settings))}   (or: make mlflow-ui)")
    say(f"serve the champions live: HANDOFF_MLFLOW_TRACKING_URI={settings.mlflow_tracking_uri} "
        "handoff serve --host 127.0.0.1 --port 8080")
    say(f"figures:       {ws.root / 'demo.json'}")
    return 0 if not replay.handoff.get("errors") else 1
