"""The workbench's plots, as matplotlib Figures: the HTML report embeds them, the tracker logs them to MLflow
and a notebook shows them as they are.

Every function returns a new :class:`~matplotlib.figure.Figure` built with the object API (never ``pyplot``'s
global state), so nothing here needs a display and several figures can be drawn from threads or a server; the
caller closes nothing. :func:`png` turns a figure into PNG bytes.

Inputs are the shapes the other parts produce: the evaluation summary (``{"overall": {strategy: metrics},
"per_chatbot": {chatbot: {strategy: metrics}}}``, metrics such as ``recall@1`` with ``recall@1_low`` and
``recall@1_high``), the per-turn predictions table (:mod:`copilot.data.predictions`), the replay's handoff timings and a
champion-vs-global table.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from copilot.data.predictions import score_shares

TIMINGS = {
    "escalation_to_notification_ms": "escalation to notification",
    "claim_ms": "claim",
    "first_agent_reply_ms": "first agent reply",
    "suggestion_ms": "suggestion",
}
MISS = 0  # the rank of a turn whose truth is in none of the suggestions
ALL_CHATBOTS = "all chatbots"


def png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (Agg renderer: no display needed). The figures here lay themselves out
    (constrained layout), so no second "tight" drawing pass is needed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _norm(text: Any) -> str:
    return " ".join(str(text).lower().split())


def truth_rank(row: Mapping[str, Any]) -> int:
    """Where the agent's real reply is among a turn's suggestions: 1 for the first, :data:`MISS` (0) for none.

    A turn with a known template (``truth_label``) and labelled suggestions is matched on labels; otherwise on the
    text, ignoring case and spacing. This is for plots; the metrics themselves live in the evaluation.
    """
    label = row.get("truth_label")
    labels = row.get("suggested_labels")
    if isinstance(label, str) and label and labels is not None and any(isinstance(x, str) for x in labels):
        candidates = list(labels)
        wanted: Any = label
    else:
        texts = row.get("suggested_texts")
        candidates = [_norm(t) for t in (texts if texts is not None else [])]
        wanted = _norm(row.get("truth_text", ""))
    for position, candidate in enumerate(candidates, start=1):
        if candidate == wanted:
            return position
    return MISS


def _float(value: Any) -> float:
    """A number, or NaN for what is missing (a JSON null, a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _interval(metrics: Mapping[str, Any], metric: str) -> tuple[float, float, float]:
    value = _float(metrics.get(metric))
    low, high = _float(metrics.get(f"{metric}_low")), _float(metrics.get(f"{metric}_high"))
    return value, value if math.isnan(low) else low, value if math.isnan(high) else high


def _interval_axes(ax: Any, rows: Mapping[str, Mapping[str, Any]], metric: str, title: str) -> None:
    """Strategies on the y axis, best at the top, a point with its interval for each."""
    # y grows upwards: the best strategy last is drawn at the top; one without the metric at the bottom
    items = sorted(rows.items(), key=lambda item: _interval(item[1], metric)[0] if math.isfinite(
        _interval(item[1], metric)[0]) else -math.inf)
    values = np.array([_interval(m, metric) for _, m in items], dtype=float).reshape(-1, 3)
    y = np.arange(len(items))
    errors = np.vstack([np.clip(values[:, 0] - values[:, 1], 0, None), np.clip(values[:, 2] - values[:, 0], 0, None)])
    ax.errorbar(values[:, 0], y, xerr=errors, fmt="o", color="#1f5fa8", ecolor="#7fa7d6", capsize=3, markersize=4)
    ax.set_yticks(y, [_short(name) for name, _ in items], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def _short(name: str, width: int = 44) -> str:
    """A label that fits: strategy ids differ at the end as often as at the start, so cut the middle."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def leaderboard(summary: Mapping[str, Any], metric: str = "recall@1", *, chatbots: list[str] | None = None,
                overall: bool = True, columns: int = 3) -> Figure:
    """Each chatbot's strategies with ``metric`` and its interval, one panel per chatbot (the overall figures
    first when ``overall``). ``chatbots`` picks and orders the panels (default: all, sorted)."""
    per_chatbot: Mapping[str, Any] = summary.get("per_chatbot", {})
    panels: list[tuple[str, Mapping[str, Any]]] = []
    if overall and summary.get("overall"):
        panels.append(("all chatbots", summary["overall"]))
    for chatbot in chatbots if chatbots is not None else sorted(per_chatbot):
        panels.append((chatbot, per_chatbot[chatbot]))
    if not panels:
        return _empty(f"no {metric} in the summary")
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    height = max(1.0, 0.22 * max(len(p) for _, p in panels) + 0.8)
    figure = Figure(figsize=(4.6 * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (title, rows_) in zip(axes.flat, panels, strict=False):
        _interval_axes(ax, rows_, metric, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if len(panels) > 1:
        figure.suptitle(f"{metric} with its interval, per chatbot", fontsize=11)
    return figure


def champion_vs_global(frame: pd.DataFrame, metric: str = "recall@1") -> Figure:
    """Per chatbot, its own champion against the one global strategy, each with its interval.

    ``frame`` has columns chatbot, champion, global, ``champion_<metric>``, ``global_<metric>`` and their
    ``_low``/``_high`` bounds.
    """
    if frame.empty:
        return _empty("no champion-vs-global table")
    data = frame.sort_values(f"champion_{metric}").reset_index(drop=True)
    y = np.arange(len(data))
    figure = Figure(figsize=(7.5, 0.3 * len(data) + 1.4), layout="constrained")
    ax = figure.subplots()
    for which, offset, color in (("champion", 0.15, "#1f7a3a"), ("global", -0.15, "#a8581f")):
        value = data[f"{which}_{metric}"].to_numpy(dtype=float)
        low = data.get(f"{which}_{metric}_low", data[f"{which}_{metric}"]).to_numpy(dtype=float)
        high = data.get(f"{which}_{metric}_high", data[f"{which}_{metric}"]).to_numpy(dtype=float)
        errors = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
        ax.errorbar(value, y + offset, xerr=errors, fmt="o", color=color, capsize=3, markersize=4,
                    label=f"{which} strategy")
    ax.set_yticks(y, [str(c) for c in data["chatbot"]], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Each chatbot's champion against the global strategy ({metric})", fontsize=10)
    return figure


def latency(frame: pd.DataFrame, title: str = "Suggestion latency per strategy") -> Figure:
    """The distribution of ``latency_ms`` per strategy (box plots on a log scale, where the spread calls for it)."""
    data = frame.dropna(subset=["latency_ms"]) if "latency_ms" in frame else frame.iloc[0:0]
    if data.empty:
        return _empty("no latencies")
    groups = sorted(data.groupby("strategy")["latency_ms"], key=lambda item: float(item[1].median()))
    figure = Figure(figsize=(7.5, 0.32 * len(groups) + 1.4), layout="constrained")
    ax = figure.subplots()
    ax.boxplot([g.to_numpy(dtype=float) for _, g in groups], orientation="horizontal", showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4})
    ax.set_yticks(np.arange(1, len(groups) + 1), [_short(str(name)) for name, _ in groups], fontsize=7)
    positive = data["latency_ms"][data["latency_ms"] > 0]
    if len(positive) and positive.max() / max(positive.min(), 1e-9) > 100:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return figure


def rank_histogram(frame: pd.DataFrame, k: int = 5, title: str = "Where the agent's reply ranks") -> Figure:
    """Per strategy, the share of turns whose real reply is the 1st, 2nd, ... k-th suggestion or in none."""
    if frame.empty:
        return _empty("no turns")
    ranks = frame.apply(truth_rank, axis=1).clip(upper=k + 1)
    table = pd.crosstab(frame["strategy"], ranks, normalize="index")
    buckets = [*range(1, k + 1), MISS]
    table = table.reindex(columns=buckets, fill_value=0.0).sort_values(1)  # the best at the top
    figure = Figure(figsize=(7.5, 0.3 * len(table) + 1.6), layout="constrained")
    ax = figure.subplots()
    left = np.zeros(len(table))
    colors = [*[f"C{i}" for i in range(k)], "#cccccc"]
    for bucket, color in zip(buckets, colors, strict=True):
        share = table[bucket].to_numpy(dtype=float)
        ax.barh(np.arange(len(table)), share, left=left, color=color,
                label="none" if bucket == MISS else f"#{bucket}")
        left += share
    ax.set_yticks(np.arange(len(table)), [_short(str(s)) for s in table.index], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of turns")
    figure.legend(ncols=k + 1, fontsize=7, loc="outside lower center")
    ax.set_title(title, fontsize=10)
    return figure


def top_share(scores: Any) -> float:
    """How sure a turn's suggestions are: the first one's share of the listed suggestions' scores
    (:func:`copilot.data.predictions.score_shares`), 0 for a turn without suggestion, NaN without scores."""
    if scores is None or isinstance(scores, float):
        return math.nan
    values = list(scores)
    return score_shares(values)[0] if values else 0.0


def precision_coverage_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The precision/coverage trade-off of a trigger threshold swept over each turn's :func:`top_share`, per chatbot
    and for all chatbots together (:data:`ALL_CHATBOTS`, one threshold for every chatbot): one row per distinct
    share, columns chatbot, threshold, coverage (share of all turns still shown a suggestion) and precision (of the
    labelled turns shown one, the share whose first suggestion is the agent's template: precision@1).

    ``frame`` is one strategy's rows of the predictions table with ``suggested_scores``; rows without scores are
    left out."""
    columns = ["chatbot", "threshold", "coverage", "precision"]
    if frame.empty or "suggested_scores" not in frame:
        return pd.DataFrame(columns=columns)
    share = frame["suggested_scores"].map(top_share).to_numpy(dtype=float)
    hit = np.array([isinstance(t, str) and labels is not None and len(labels) > 0 and labels[0] == t
                    for t, labels in zip(frame["truth_label"], frame["suggested_labels"], strict=True)], dtype=bool)
    data = pd.DataFrame({
        "chatbot": frame["chatbot"].astype(str).to_numpy(), "share": share, "hit": hit,
        "shown": frame["suggested_texts"].map(len).to_numpy() > 0, "labelled": frame["truth_label"].notna().to_numpy(),
    })[~np.isnan(share)]
    rows = []
    for chatbot, part in [(ALL_CHATBOTS, data), *sorted(data.groupby("chatbot"), key=lambda item: str(item[0]))]:
        shown = part[part["shown"]].sort_values("share", ascending=False, kind="stable")
        if shown.empty:
            continue
        counted = (shown["labelled"]).cumsum().to_numpy()
        hits = (shown["hit"] & shown["labelled"]).cumsum().to_numpy()
        values = shown["share"].to_numpy()
        last = np.flatnonzero(np.append(values[1:] != values[:-1], True))  # each distinct share's last turn
        for i in last:
            if counted[i]:
                rows.append({"chatbot": str(chatbot), "threshold": float(values[i]), "coverage": (i + 1) / len(part),
                             "precision": hits[i] / counted[i]})
    return pd.DataFrame(rows, columns=columns)


def precision_coverage(frame: pd.DataFrame, title: str = "Precision against coverage as the threshold rises"
                       ) -> Figure:
    """:func:`precision_coverage_points` drawn: x coverage, y precision, a thin line per chatbot (labelled when
    there are few) and all chatbots together in bold."""
    points = precision_coverage_points(frame)
    if points.empty:
        return _empty("no suggestion scores to sweep a threshold over")
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = figure.subplots()
    chatbots = [c for c in points["chatbot"].unique() if c != ALL_CHATBOTS]
    for chatbot in chatbots:
        line = points[points["chatbot"] == chatbot]
        ax.plot(line["coverage"], line["precision"], linewidth=0.9, alpha=0.55,
                label=chatbot if len(chatbots) <= 10 else None)
    overall = points[points["chatbot"] == ALL_CHATBOTS]
    ax.plot(overall["coverage"], overall["precision"], color="black", linewidth=2.6, label=ALL_CHATBOTS)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage: share of turns shown a suggestion")
    ax.set_ylabel("precision: first suggestion right")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncols=2 if len(chatbots) > 5 else 1)
    ax.set_title(title, fontsize=10)
    return figure


def handoff_timings(handoff: Mapping[str, Any]) -> Figure:
    """The replay's handoff timings (p50 and p99 of each) as grouped bars on a log scale."""
    present = [(key, label) for key, label in TIMINGS.items() if isinstance(handoff.get(key), Mapping)]
    if not present:
        return _empty("no handoff timings")
    figure = Figure(figsize=(7.5, 3.2), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(present))
    for offset, quantile, color in ((-0.2, "p50", "#1f5fa8"), (0.2, "p99", "#a8581f")):
        values = [_float(handoff[key].get(quantile)) for key, _ in present]
        bars = ax.bar(x + offset, values, width=0.4, color=color, label=quantile)
        ax.bar_label(bars, labels=[_ms(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, [label for _, label in present], fontsize=8)
    positive = [float(handoff[key][q]) for key, _ in present for q in ("p50", "p99")
                if isinstance(handoff[key].get(q), int | float) and handoff[key][q] > 0]
    if positive and max(positive) > 100 * min(positive):  # notification in ms, first reply in seconds
        ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax.set_title("Handoff timings in the replay", fontsize=10)
    return figure


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return ""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _empty(message: str) -> Figure:
    figure = Figure(figsize=(4, 1))
    figure.text(0.5, 0.5, message, ha="center", va="center")
    return figure
