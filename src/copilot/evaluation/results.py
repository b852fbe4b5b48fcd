"""docs/results.md, regenerated from evaluation runs (``copilot results --runs DIR... --out docs/results.md``).

Each run folder is what :func:`copilot.evaluation.runs.run` wrote: ``summary.json`` (the scores) and ``run.json``
(task, data files and hashes, commit, strategies and settings). The page is never typed by hand: every figure in
it comes from those files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from copilot._io import read_json, write_text_atomic
from copilot.evaluation.metrics import METRICS
from copilot.evaluation.runs import CHAMPIONS

COLUMNS = ("recall@1", "recall@3", "recall@5", "mrr")
SEMANTIC = ("semantic@1", "semantic@3")  # shown when the run computed them (free-typed turns)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ci(scores: Mapping[str, Any], metric: str) -> str:
    if scores.get(metric) is None:
        return "–"
    low, high = scores.get(f"{metric}_low"), scores.get(f"{metric}_high")
    if low is None or high is None:
        return _num(scores[metric])
    return f"{_num(scores[metric])} [{_num(low)}, {_num(high)}]"


def _order(overall: Mapping[str, Mapping[str, Any]], metric: str) -> list[str]:
    higher = METRICS.get(metric).higher_is_better

    def key(sid: str) -> float:
        value = overall[sid].get(metric)
        if value is None:
            return math.inf
        return -value if higher else value

    return sorted(overall, key=key)


def run_section(run_dir: str | os.PathLike[str]) -> str:
    """The markdown of one evaluation run: data and commit, every strategy overall with intervals, the
    champions line, and every chatbot."""
    folder = Path(run_dir)
    summary = read_json(folder / "summary.json")
    meta = read_json(folder / "run.json") if (folder / "run.json").exists() else {}
    metric = meta.get("selection_metric", "recall@1")
    overall = summary["overall"]
    order = _order(overall, metric)
    lines = [f"## {meta.get('task', folder.name)}", ""]
    data = []
    for split in ("train", "test"):
        if f"{split}_path" in meta:
            sha = meta.get(f"{split}_sha256")
            data.append(f"{split} `{Path(meta[f'{split}_path']).name}`" + (f" (sha256 {sha[:12]})" if sha else ""))
    lines.append(f"- data: {meta.get('data', '?')}; " + "; ".join(data))
    lines.append(f"- commit: `{meta.get('commit', 'unknown')}`; task file: `{meta.get('task_path')}`; "
                 f"{meta.get('k', '?')} suggestions per turn")
    lines.append(f"- intervals: 95% percentile bootstrap over conversations, n_boot={meta.get('n_boot', '?')}, "
                 f"seed={meta.get('seed', '?')}; ranked by {metric}")
    lines.append("")
    columns = [*COLUMNS, *(m for m in SEMANTIC if any(m in s for s in overall.values()))]
    header = ["strategy", *columns, "coverage", "latency p50 / p95 ms", "tokens/turn", "labelled turns"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for sid in order:
        s = overall[sid]
        lines.append("| " + " | ".join([
            f"`{sid}`", *(_ci(s, m) for m in columns), _num(s.get("coverage")),
            f"{_num(s.get('latency_p50'), 1)} / {_num(s.get('latency_p95'), 1)}", _num(s.get("tokens"), 1),
            str(s.get("n_turns", "–")),
        ]) + " |")
    lines.append("")
    singles = [sid for sid in order if sid != CHAMPIONS]
    if CHAMPIONS in overall and singles:
        best = singles[0]
        lines.append(f"**Champions** (each chatbot answered by its own tuned winner): {metric} "
                     f"{_ci(overall[CHAMPIONS], metric)} against the best single strategy `{best}` "
                     f"{_ci(overall[best], metric)}.")
        settings = meta.get("strategies", {}).get(CHAMPIONS, {})
        if settings:
            grouped: dict[str, list[str]] = {}
            for bot, champion in settings.items():
                params = ", ".join(f"{k}={v!r}" for k, v in sorted(champion.get("params", {}).items()))
                grouped.setdefault(f"{champion['strategy']}({params})", []).append(bot)
            lines.append("")
            for setting, bots in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"- `{setting}`: {len(bots)} chatbot(s) ({', '.join(sorted(bots))})")
        lines.append("")
    lines.append(f"### Per chatbot ({metric} [95% CI]; labelled test turns)")
    lines.append("")
    header = ["chatbot", "labelled turns", *(f"`{sid}`" for sid in order)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for bot, scores in summary["per_chatbot"].items():
        n = max((s.get("n_turns", 0) for s in scores.values()), default=0)
        lines.append("| " + " | ".join([bot, str(n), *(_ci(scores[sid], metric) if sid in scores else "–"
                                                        for sid in order)]) + " |")
    lines.append("")
    return "\n".join(lines)


def render_results(runs: Sequence[str | os.PathLike[str]]) -> str:
    """The whole page for the given run folders, in the given order."""
    command = "copilot results --runs " + " ".join(str(r) for r in runs)
    head = [
        "# Results",
        "",
        f"Generated by `{command}` from each run's `summary.json` and `run.json`; do not edit by hand.",
        "Metrics, intervals and the tuning rule: docs/evaluation.md.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(run_section(r) for r in runs)


def write_results(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write :func:`render_results` to ``out`` (default docs/results.md in the CLI)."""
    return write_text_atomic(out, render_results(runs))
