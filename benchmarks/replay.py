"""Replay throughput and handoff latencies through the live server, with and without a served champion.

In one run, each configuration gets a fresh ``handoff serve`` (fresh SQLite database) and a fresh MLflow store:
- baseline: no champion (the server sends no suggestions; agent turns do not wait for any);
- tfidf: a lexical champion per chatbot, fitted on the training split and exported (``copilot-<chatbot>@champion``);
- dense: a MiniLM champion per chatbot (``copilot.strategies.dense``), when that strategy is available.

The same conversations are replayed through each (``copilot.live.replay``: bot, customer and K agent clients, a claim
race per escalation, typing before each message, suggestions awaited at each agent turn). Printed per
configuration: conversations per second, p50/p99 of escalation to notification, claim, first agent reply (from the
escalation) and suggestion latency, and ratios against the baseline of the same run. Goal: the whole STAR corpus
(4720 conversations) with a dense champion within 5 minutes.

    .venv/bin/python benchmarks/replay.py [--limit N] [--concurrency 16] [--configs baseline,tfidf,dense]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from suggest import load_splits  # the sibling benchmark script: one way to find STAR or the sample

from copilot.live.replay import LATENCIES, replay, select, started_server
from copilot.live.replayer import ReplayConfig
from copilot.serving.export import export_champions
from copilot.strategies import STRATEGIES


def _run(config_name: str, data: Any, train: Any, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    uri = None
    export_s = 0.0
    if config_name != "baseline":
        uri = f"sqlite:///{folder / config_name / 'mlflow.db'}"
        (folder / config_name).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        champions = {bot: {"strategy": config_name, "params": {}} for bot in data.chatbot_ids()}
        export_champions(champions, train, uri)
        export_s = time.perf_counter() - started
    config = ReplayConfig(concurrency=args.concurrency, agents=args.agents,
                          expect_suggestions=config_name != "baseline", suggestion_wait_s=30.0)
    started = time.perf_counter()
    with started_server(tracking_uri=uri, suggestions_k=5) as server:
        start_s = time.perf_counter() - started
        server_cpu0, client_cpu0 = server.cpu_s() or 0.0, time.process_time()
        result = asyncio.run(replay(data, server.url, server.admin_key, config, progress=not args.quiet))
        server_cpu = (server.cpu_s() or 0.0) - server_cpu0
        client_cpu = time.process_time() - client_cpu0
    report = result.handoff
    report.update(config=config_name, export_s=export_s, server_start_s=start_s, server_cpu_s=server_cpu,
                  client_cpu_s=client_cpu)
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", help="a folder with train/dev/test.jsonl (default: STAR imported from "
                        "$COPILOT_STAR_DIR and split with seed 0, else the project's sample)")
    parser.add_argument("--limit", type=int, help="only the first N conversations (default: all)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--configs", default="baseline,tfidf,dense")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    source, splits = load_splits(args.splits)
    train = splits["train"]
    # the whole data set is replayed; the champions are fitted on its train split
    whole = train.subset([c for part in splits.values() for c in part.conversations])
    data = select(whole, limit=args.limit)
    print(f"data: {source}", file=sys.stderr)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        for name in configs:
            if name != "baseline" and name not in STRATEGIES:
                print(f"{name}: strategy not available on this branch; skipped", file=sys.stderr)
                continue
            print(f"== {name}: {len(data.conversations)} conversations, concurrency {args.concurrency}",
                  file=sys.stderr, flush=True)
            reports.append(_run(name, data, train, args, Path(tmp)))
            r = reports[-1]
            # As each configuration ends, so a long run interrupted later still leaves its figures.
            print(f"   {name}: {r['completed']}/{r['conversations']} in {r['elapsed_s']:.1f} s "
                  f"({r['conversations_per_s']:.2f}/s); " + ", ".join(
                      f"{k} p50 {_fmt(r[k]['p50'])} p99 {_fmt(r[k]['p99'])}" for k in LATENCIES),
                  file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(reports, indent=2) + "\n")

    base = next((r for r in reports if r["config"] == "baseline"), None)
    print(f"{len(data.conversations)} conversations ({sum(len(c.agent_turn_indices()) for c in data.conversations)} "
          f"agent turns), concurrency {args.concurrency}, {args.agents} agents per chatbot")
    header = f"{'config':<9} {'done':>9} {'conv/s':>7} {'x base':>6} {'wall s':>7} " + " ".join(
        f"{k.removesuffix('_ms'):>30}" for k in LATENCIES)
    print(header)
    print(" " * 42 + " ".join(f"{'p50 / p99 ms (x base p50)':>30}" for _ in LATENCIES))
    for r in reports:
        ratio = r["conversations_per_s"] / base["conversations_per_s"] if base else None
        cells = []
        for key in LATENCIES:
            p = r[key]
            rel = (p["p50"] / base[key]["p50"]) if base and base[key]["p50"] and p["p50"] else None
            cells.append(f"{_fmt(p['p50'])} / {_fmt(p['p99'])} ({'-' if rel is None else f'{rel:.2f}x'})")
        print(f"{r['config']:<9} {r['completed']:>4}/{r['conversations']:<4} {r['conversations_per_s']:>7.2f} "
              f"{'-' if ratio is None else f'{ratio:.2f}':>6} {r['elapsed_s']:>7.1f} "
              + " ".join(f"{c:>30}" for c in cells))
    for r in reports:
        if r["errors"]:
            print(f"{r['config']}: {len(r['errors'])} errors, first: {r['errors'][0]}")
        if r["config"] != "baseline":
            print(f"{r['config']}: export {r['export_s']:.1f} s, server start (champions loaded) "
                  f"{r['server_start_s']:.1f} s, suggestions {r['suggestions_received']}/{r['agent_turns']}")
        print(f"{r['config']}: CPU during the replay: server {r['server_cpu_s']:.1f} s, replay clients "
              f"{r['client_cpu_s']:.1f} s, over {r['elapsed_s']:.1f} s of wall time")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
