"""The report for product: one static HTML page, ``index.html``, readable without a server or the internet.

Sections: the per-chatbot leaderboard with intervals (tables and a faceted interval plot), each chatbot's champion
against the global strategy, the per-chatbot knobs kept by the tuning with the precision/coverage curve of a trigger
threshold on the champions' test turns, suggestion latency distributions (offline, and through the live server in the
replay), and the handoff timings of the replay. Plots come from :mod:`copilot.report.plots` and are embedded as PNG data
URIs, so the page is one file that can be mailed or attached. Any input may be missing; its section then says
what to pass.

``copilot report --out reports/ --summary ... --predictions ...`` calls :func:`write_report`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from copilot._io import file_sha256, write_text_atomic
from copilot.report import plots

METRICS = ("recall@1", "recall@3", "recall@5", "mrr")
CHAMPIONS = "champions"  # the evaluation's strategy id of the per-chatbot champions (copilot.evaluation.runs)
SECTIONS = {
    "leaderboard": "Leaderboard per chatbot",
    "champions": "Champion against the global strategy",
    "knobs": "Per-chatbot knobs: blend and threshold",
    "latency": "Suggestion latency",
    "handoff": "Handoff timings",
    "provenance": "Where these figures come from",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #1d1d1d; }
h1 { margin-bottom: 0.2rem; } .meta { color: #555; margin-top: 0; }
nav ul { display: flex; flex-wrap: wrap; gap: 1rem; list-style: none; padding: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td.name { text-align: left; } tr.best td { font-weight: 600; }
.interval { color: #666; font-size: 0.8rem; } .note { color: #555; font-style: italic; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1rem; }
details { margin: 0.3rem 0; } summary { cursor: pointer; } summary h3 { display: inline; }
code { word-break: break-all; } .wide { overflow-x: auto; }
"""


def load_table(path: str | Path) -> pd.DataFrame:
    """A predictions or champion table from ``.parquet``, ``.csv``, ``.jsonl`` or ``.json`` (records)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    raise ValueError(f"{path}: a table must be .parquet, .csv, .jsonl or .json")


def write_report(out_dir: str | Path, *, summary: Mapping[str, Any], predictions: pd.DataFrame | None = None,
                 handoff: Mapping[str, Any] | None = None, replay_turns: pd.DataFrame | None = None,
                 champions_vs_global: pd.DataFrame | None = None, knobs: pd.DataFrame | None = None,
                 title: str = "Copilot report",
                 sources: Mapping[str, str | Path] | None = None, metric: str = "recall@1") -> Path:
    """Write ``out_dir/index.html``; returns its path.

    Args:
        summary: the evaluation's summary.json (``overall`` and ``per_chatbot`` metrics with intervals).
        predictions: the offline per-turn predictions table, for latency per strategy.
        handoff: the replay's handoff.json (timings with p50/p99, counts).
        replay_turns: the replay's per-turn table (same columns as predictions), for latency through the server.
        champions_vs_global: columns chatbot, champion, global, ``champion_<metric>``, ``global_<metric>`` and
            their ``_low``/``_high`` bounds.
        knobs: the knobs each chatbot kept (:func:`knobs_table` of the tuning's tuning.json).
        sources: the files the inputs were read from (name -> path); their SHA-256 are printed in the page.
        metric: the metric that ranks strategies.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    hashes = {name: (str(path), file_sha256(path)) for name, path in (sources or {}).items()}
    content_hash = hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {generated} · summary SHA-256 <code>{content_hash[:16]}</code></p>',
        "<nav><ul>" + "".join(f'<li><a href="#{key}">{_e(name)}</a></li>' for key, name in SECTIONS.items())
        + "</ul></nav>",
        _section("leaderboard", _leaderboard(summary, metric, predictions)),
        _section("champions", _champions(champions_vs_global, metric)),
        _section("knobs", _knobs(knobs, predictions)),
        _section("latency", _latency(predictions, replay_turns)),
        _section("handoff", _handoff(handoff)),
        _section("provenance", _provenance(hashes, content_hash, generated)),
    ]
    page = ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    return write_text_atomic(out / "index.html", page)  # a reader never sees half a page


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _breakable(chatbot: Any) -> str:
    """A chatbot id that may wrap after each ``+`` (STAR's ids join up to five task names)."""
    return "+<wbr>".join(_e(part) for part in str(chatbot).split("+"))


def _section(key: str, content: str) -> str:
    return f'<section id="{key}">\n<h2>{_e(SECTIONS[key])}</h2>\n{content}\n</section>'


def _img(figure: Figure, alt: str) -> str:
    data = base64.b64encode(plots.png(figure)).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _number(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{number:.{digits}f}" if math.isfinite(number) else ""


def _with_interval(metrics: Mapping[str, Any], metric: str) -> str:
    value = _number(metrics.get(metric))
    if not value:
        return ""
    low, high = _number(metrics.get(f"{metric}_low")), _number(metrics.get(f"{metric}_high"))
    interval = f' <span class="interval">[{low}, {high}]</span>' if low and high else ""
    return value + interval


def _leaderboard_table(rows: Mapping[str, Mapping[str, Any]], metric: str) -> str:
    ranked = sorted(rows.items(), key=lambda item: -_float(item[1].get(metric)))
    head = "".join(f"<th>{_e(m)} [interval]</th>" for m in METRICS)
    lines = [f'<div class="wide"><table><thead><tr><th>strategy</th>{head}<th>turns</th></tr></thead><tbody>']
    for index, (strategy, metrics) in enumerate(ranked):
        cells = "".join(f"<td>{_with_interval(metrics, m)}</td>" for m in METRICS)
        turns = metrics.get("n_turns")
        css = ' class="best"' if index == 0 else ""
        lines.append(f"<tr{css}><td>{_e(strategy)}</td>{cells}<td>{_number(turns, 0)}</td></tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


def _leaderboard(summary: Mapping[str, Any], metric: str, predictions: pd.DataFrame | None) -> str:
    overall = summary.get("overall") or {}
    per_chatbot = summary.get("per_chatbot") or {}
    if not overall and not per_chatbot:
        return _note("The summary has no metrics (pass --summary FILE: the evaluation's summary.json).")
    parts = [f"<p>Strategies ranked by {_e(metric)}, best first (bold); in brackets the interval of each figure. "
             "Where two intervals overlap, the data do not tell the two strategies apart.</p>"]
    if overall:
        parts += ["<h3>All chatbots</h3>", _leaderboard_table(overall, metric),
                  _img(plots.leaderboard(summary, metric, chatbots=[]), f"{metric} with its interval, all chatbots")]
    if predictions is not None and not predictions.empty:
        parts += ["<p>Where the agent's real reply ranks among each strategy's suggestions, all chatbots "
                  "together (matched on the template when known, on the text otherwise).</p>",
                  _img(plots.rank_histogram(predictions), "where the agent's reply ranks, per strategy")]
    if per_chatbot:
        parts += ["<h3>Each chatbot's best strategy</h3>", _best_per_chatbot(per_chatbot, metric),
                  "<p>Each chatbot's full table and plot below.</p>"]
    opened = " open" if len(per_chatbot) <= 6 else ""  # 36 chatbots: a list to open one by one
    for chatbot in sorted(per_chatbot):
        figure = plots.leaderboard(summary, metric, chatbots=[chatbot], overall=False)
        parts.append(f'<details{opened}><summary><h3>{_e(chatbot)}</h3></summary>'
                     f"{_leaderboard_table(per_chatbot[chatbot], metric)}"
                     f"{_img(figure, f'{metric} with its interval, {chatbot}')}</details>")
    return "\n".join(parts)


def _best_per_chatbot(per_chatbot: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str) -> str:
    """One line per chatbot: its best strategy and the runner-up, each with the interval of ``metric``."""
    lines = [f'<div class="wide"><table><thead><tr><th>chatbot</th><th>best strategy</th>'
             f"<th>{_e(metric)} [interval]</th><th>runner-up</th><th>{_e(metric)} [interval]</th><th>turns</th>"
             "</tr></thead><tbody>"]
    for chatbot in sorted(per_chatbot):
        ranked = sorted(per_chatbot[chatbot].items(), key=lambda item: -_float(item[1].get(metric)))
        best, second = ranked[0] if ranked else ("", {}), ranked[1] if len(ranked) > 1 else ("", {})
        lines.append(f'<tr><td>{_e(chatbot)}</td><td class="name">{_e(best[0])}</td>'
                     f"<td>{_with_interval(best[1], metric)}</td><td class=\"name\">{_e(second[0])}</td>"
                     f"<td>{_with_interval(second[1], metric)}</td><td>{_number(best[1].get('n_turns'), 0)}</td></tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _champions(frame: pd.DataFrame | None, metric: str) -> str:
    if frame is None or frame.empty:
        return _note("No champion-vs-global table was given (pass --champions-vs-global CSV, from the tuning).")
    lines = ["<p>Each chatbot's own best strategy (its champion, chosen on the development split) against the "
             "one strategy that is best over all chatbots, both measured on the test split.</p>",
             f"<table><thead><tr><th>chatbot</th><th>champion</th><th>{_e(metric)} [interval]</th><th>global</th>"
             f"<th>{_e(metric)} [interval]</th><th>difference</th></tr></thead><tbody>"]
    for row in frame.sort_values("chatbot").to_dict("records"):
        champion = {metric: row.get(f"champion_{metric}"), f"{metric}_low": row.get(f"champion_{metric}_low"),
                    f"{metric}_high": row.get(f"champion_{metric}_high")}
        global_ = {metric: row.get(f"global_{metric}"), f"{metric}_low": row.get(f"global_{metric}_low"),
                   f"{metric}_high": row.get(f"global_{metric}_high")}
        difference = _float(champion[metric]) - _float(global_[metric])
        lines.append(f"<tr><td>{_e(row['chatbot'])}</td><td class=\"name\">{_e(row.get('champion', ''))}</td>"
                     f"<td>{_with_interval(champion, metric)}</td><td class=\"name\">{_e(row.get('global', ''))}</td>"
                     f"<td>{_with_interval(global_, metric)}</td><td>{_signed(difference)}</td></tr>")
    lines.append("</tbody></table>")
    lines.append(_img(plots.champion_vs_global(frame, metric), "each chatbot's champion against the global strategy"))
    return "\n".join(lines)


def knobs_table(tuning: Mapping[str, Any]) -> pd.DataFrame:
    """One row per chatbot of ``copilot tune``'s tuning.json: its champion, the knobs it kept (partner, blend weight,
    threshold) and why; empty for a tuning written before the knob stage."""
    rows = []
    for bot, entry in sorted((tuning.get("per_chatbot") or {}).items()):
        knobs = entry.get("knobs")
        if not isinstance(knobs, Mapping):
            continue
        kept = knobs.get("kept") or {}
        rows.append({"chatbot": bot, "champion": knobs.get("base", ""), "partner": kept.get("partner"),
                     "blend": kept.get("blend") or None, "threshold": kept.get("threshold"),
                     "kept": bool(kept), "why": knobs.get("summary", "")})
    return pd.DataFrame(rows, columns=["chatbot", "champion", "partner", "blend", "threshold", "kept", "why"])


CURVE_CAPTION = (
    "What a threshold would do on the test split: each chatbot shows its champion's suggestions only when the first "
    "one is sure enough (its share of the listed suggestions' scores). Raising that bar moves a line to the left: "
    "fewer turns get a suggestion (coverage), and those that do are right more often (precision: the first "
    "suggestion is the template the agent chose). One thin line per chatbot; the bold line is all chatbots with one "
    "bar. Turns a kept threshold already hid sit to the right of where each line ends.")


def _knobs(table: pd.DataFrame | None, predictions: pd.DataFrame | None) -> str:
    parts = ["<p>On top of its champion, each chatbot may keep two knobs, tuned on the development split: a blend "
             "with a second strategy (its partner, with a weight) and a threshold below which it shows no suggestion "
             "at all. A knob is kept only when it is clearly better on that chatbot's development turns: its "
             "interval, resampled by conversation, excludes 0.</p>"]
    if table is None:
        parts.append(_note("No tuning result was given (pass --tuning FILE: the tuning's tuning.json)."))
    elif table.empty:
        parts.append(_note("The tuning result has no knobs (it was written before the knob stage)."))
    else:
        kept = int(table["kept"].sum())
        parts.append(f"<p>{kept} of {len(table)} chatbots kept a knob.</p>")
        rows = table.sort_values("chatbot").to_dict("records")
        if kept:
            lines = ['<div class="wide"><table><thead><tr><th>chatbot</th><th>champion</th><th>blend partner</th>'
                     "<th>weight</th><th>threshold</th><th>what was kept</th></tr></thead><tbody>"]
            for row in (r for r in rows if r["kept"]):
                partner = row["partner"] if isinstance(row["partner"], str) else ""
                champion = str(row["champion"] or "")
                family = champion.split("(", 1)[0] or champion  # the family; its settings on hover
                lines.append(f"<tr><td>{_breakable(row['chatbot'])}</td>"
                             f"<td class=\"name\" title=\"{_e(champion)}\">{_e(family)}</td>"
                             f"<td class=\"name\" title=\"{_e(partner)}\">{_e(partner.split('(', 1)[0])}</td>"
                             f"<td>{_number(row['blend'], 2)}</td>"
                             f"<td>{_number(row['threshold'], 3)}</td><td>{_e(row['why'])}</td></tr>")
            lines.append("</tbody></table></div>")
            parts.append("\n".join(lines))
        others = [r for r in rows if not r["kept"]]
        if others:
            items = "".join(f"<li><b>{_breakable(r['chatbot'])}</b>: {_e(r['why'])}</li>" for r in others)
            parts.append(f"<details><summary>The {len(others)} chatbot{'s' if len(others) != 1 else ''} that kept "
                         "nothing, and why</summary>"
                         f"<ul>{items}</ul></details>")
    champions = (predictions[predictions["strategy"] == CHAMPIONS]
                 if predictions is not None and not predictions.empty else None)
    if champions is None or champions.empty:
        parts.append(_note("No champions rows in the predictions table (pass --predictions FILE of an evaluation of "
                           "the tuned task) for the precision/coverage curve."))
    elif plots.precision_coverage_points(champions).empty:
        parts.append(_note("The predictions have no suggestion scores (suggested_scores; written by an older "
                           "evaluation): no precision/coverage curve."))
    else:
        parts += [f"<p>{_e(CURVE_CAPTION)}</p>",
                  _img(plots.precision_coverage(champions), "precision against coverage of a threshold, per chatbot")]
    return "\n".join(parts)


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else ""


def _latency_table(frame: pd.DataFrame) -> str:
    grouped = frame.groupby("strategy")["latency_ms"]
    stats = pd.DataFrame({"turns": grouped.size(), "p50": grouped.quantile(0.5), "p90": grouped.quantile(0.9),
                          "p99": grouped.quantile(0.99), "max": grouped.max()}).sort_values("p50")
    lines = ["<table><thead><tr><th>strategy</th><th>turns</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>"
             "<th>max ms</th></tr></thead><tbody>"]
    for strategy, row in stats.iterrows():
        lines.append(f"<tr><td>{_e(strategy)}</td><td>{int(row['turns'])}</td>"
                     + "".join(f"<td>{_number(row[c], 1)}</td>" for c in ("p50", "p90", "p99", "max")) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _latency(predictions: pd.DataFrame | None, replay_turns: pd.DataFrame | None) -> str:
    parts = []
    if predictions is not None and not predictions.empty:
        parts += ["<h3>Offline: time to compute the suggestions</h3>", _latency_table(predictions),
                  _img(plots.latency(predictions, "Offline suggestion latency per strategy"),
                       "offline suggestion latency per strategy")]
    else:
        parts.append(_note("No predictions table was given (pass --predictions FILE)."))
    if replay_turns is not None and not replay_turns.empty:
        parts += ["<h3>Through the live server: from the customer's message to the suggestions</h3>",
                  _latency_table(replay_turns),
                  _img(plots.latency(replay_turns, "Suggestion latency through the live server (replay)"),
                       "suggestion latency through the live server")]
    else:
        parts.append(_note("No replay turns were given (pass --replay-turns FILE)."))
    return "\n".join(parts)


def _handoff(handoff: Mapping[str, Any] | None) -> str:
    if not handoff:
        return _note("No replay result was given (pass --handoff FILE: the replay's handoff.json).")
    errors = handoff.get("errors") or []
    counts = [("conversations replayed", handoff.get("conversations")), ("completed", handoff.get("completed")),
              ("errors", len(errors)), ("claims lost to another agent", handoff.get("claim_losers"))]
    lines = ["<table><tbody>"]
    lines += [f"<tr><td>{_e(name)}</td><td>{_e(value if not isinstance(value, list) else len(value))}</td></tr>"
              for name, value in counts if value is not None]
    lines.append("</tbody></table>")
    timings = [(key, label) for key, label in plots.TIMINGS.items() if isinstance(handoff.get(key), Mapping)]
    if timings:
        lines.append("<table><thead><tr><th>timing</th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody>")
        lines += [f"<tr><td>{_e(label)}</td><td>{_number(handoff[key].get('p50'), 1)}</td>"
                  f"<td>{_number(handoff[key].get('p99'), 1)}</td></tr>" for key, label in timings]
        lines.append("</tbody></table>")
        lines.append(_img(plots.handoff_timings(handoff), "handoff timings in the replay (p50 and p99)"))
    if errors:
        shown = "".join(f"<li>{_e(error)}</li>" for error in errors[:20])
        more = f"<li>… and {len(errors) - 20} more</li>" if len(errors) > 20 else ""
        lines.append(f"<details><summary>Errors ({len(errors)})</summary><ul>{shown}{more}</ul></details>")
    return "\n".join(lines)


def _provenance(hashes: Mapping[str, tuple[str, str]], content_hash: str, generated: str) -> str:
    lines = [f"<p>Generated {generated}. SHA-256 of the summary's content: <code>{content_hash}</code>.</p>"]
    if hashes:
        lines.append("<table><thead><tr><th>input</th><th>file</th><th>SHA-256</th></tr></thead><tbody>")
        lines += [f"<tr><td>{_e(name)}</td><td>{_e(path)}</td><td><code>{digest}</code></td></tr>"
                  for name, (path, digest) in hashes.items()]
        lines.append("</tbody></table>")
    return "\n".join(lines)
