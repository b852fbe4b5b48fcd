"""The report from files through the command line, and the plots a notebook gets (tests/browser/test_report.py
opens the page in a real browser)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from workbench_testing import HANDOFF, TUNING, Evaluation, champions_vs_global, with_champions

from copilot._io import file_sha256
from copilot.cli import main
from copilot.report import plots
from copilot.report.report import SECTIONS, knobs_table, write_report


def test_copilot_report_writes_one_page_from_the_files(evaluation: Evaluation, tmp_path: Path) -> None:
    files = {"summary": tmp_path / "summary.json", "predictions": tmp_path / "predictions.parquet",
             "handoff": tmp_path / "handoff.json", "replay": tmp_path / "turns.parquet",
             "champions": tmp_path / "champions.csv", "tuning": tmp_path / "tuning.json"}
    files["summary"].write_text(json.dumps(evaluation.summary))
    with_champions(evaluation.frame).to_parquet(files["predictions"])
    files["tuning"].write_text(json.dumps(TUNING))
    files["handoff"].write_text(json.dumps(HANDOFF))
    evaluation.frame.to_parquet(files["replay"])
    champions_vs_global().to_csv(files["champions"], index=False)
    out = tmp_path / "reports"
    assert main(["report", "--out", str(out), "--summary", str(files["summary"]),
                 "--predictions", str(files["predictions"]), "--handoff", str(files["handoff"]),
                 "--replay-turns", str(files["replay"]), "--champions-vs-global", str(files["champions"]),
                 "--tuning", str(files["tuning"])]) == 0
    page = (out / "index.html").read_text()
    assert [p.name for p in out.iterdir()] == ["index.html"]  # one self-contained file
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">' in page and heading in page
    for path in files.values():
        assert file_sha256(path) in page
    assert page.count("<img ") == 9 and "not given" not in page and "No champions rows" not in page
    assert "tfidf(ngram_range=(1, 2))" in page and "0.542" in page  # overall recall@1 of the constructed data
    # each chatbot's best strategy and runner-up at a glance (weather: tfidf 0.750, bm25 0.167)
    assert ('<tr><td>weather</td><td class="name">tfidf(ngram_range=(1, 2))</td><td>0.750 <span class="interval">'
            '[0.550, 0.950]</span></td><td class="name">bm25(k1=1.2)</td>') in page


def test_the_knobs_table_and_the_precision_coverage_curve(evaluation: Evaluation, tmp_path: Path) -> None:
    table = knobs_table(TUNING)
    bank, weather = table.to_dict("records")
    assert {k: bank[k] for k in ("chatbot", "partner", "blend", "threshold", "kept")} == {
        "chatbot": "bank", "partner": "bm25(k1=1.2)", "blend": 0.5, "threshold": 0.42, "kept": True}
    assert weather["kept"] is False and all(pd.isna(weather[k]) for k in ("partner", "blend", "threshold"))
    page = write_report(tmp_path, summary=evaluation.summary, predictions=with_champions(evaluation.frame),
                        knobs=table).read_text()
    knobs = page[page.index('<section id="knobs">'):page.index('<section id="latency">')]
    assert "1 of 2 chatbots kept a knob" in knobs and "none kept: no blend" in knobs
    # the partner by its family, its settings on hover; the chatbots without knobs listed with why, folded
    assert '<td class="name" title="bm25(k1=1.2)">bm25</td><td>0.50</td><td>0.420</td>' in knobs
    assert "The 1 chatbot that kept nothing, and why</summary>" in knobs
    assert knobs.count("<img ") == 1 and "Raising that bar" in knobs
    without = write_report(tmp_path, summary=evaluation.summary, predictions=evaluation.frame).read_text()
    assert "pass --tuning FILE" in without and "No champions rows" in without
    older = with_champions(evaluation.frame).drop(columns=["suggested_scores"])  # written before the scores
    assert "no suggestion scores" in write_report(tmp_path, summary=evaluation.summary, predictions=older,
                                                  knobs=knobs_table({"per_chatbot": {"x": {}}})).read_text()


def test_precision_coverage_by_hand() -> None:
    from copilot.data.context import Suggestion
    from copilot.data.predictions import prediction_row, predictions_frame

    def row(bot: str, turn: int, truth: str | None, items: list[tuple[str, float]]) -> dict[str, object]:
        return prediction_row(strategy="champions", chatbot=bot, conversation_id=f"{bot}-c", turn_index=turn,
                              truth_label=truth, truth_text="t", latency_ms=1.0,
                              suggestions=[Suggestion(label, score, label) for label, score in items])

    frame = predictions_frame([
        row("A", 1, "x", [("x", 3.0), ("y", 1.0)]),  # top share 0.75, right
        row("A", 2, "x", [("y", 1.0), ("x", 1.0)]),  # 0.5, wrong
        row("A", 3, None, [("y", 1.0)]),  # 1.0, free text: shown, not in precision
        row("A", 4, "x", []),  # nothing shown
        row("B", 1, "z", [("z", 1.0), ("w", 1.0)]),  # 0.5, right
    ])
    points = plots.precision_coverage_points(frame)
    a = points[points["chatbot"] == "A"]
    assert a[["threshold", "coverage", "precision"]].values.tolist() == [[0.75, 0.5, 1.0], [0.5, 0.75, 0.5]]
    overall = points[points["chatbot"] == plots.ALL_CHATBOTS]  # one bar for both chatbots: 5 turns
    assert overall[["threshold", "coverage", "precision"]].values.tolist() == [[0.75, 0.4, 1.0], [0.5, 0.8, 2 / 3]]
    assert plots.png(plots.precision_coverage(frame)).startswith(b"\x89PNG")


def test_missing_inputs_say_what_to_pass_and_names_are_escaped(evaluation: Evaluation, tmp_path: Path) -> None:
    summary = {"per_chatbot": {"<b>bank</b>": evaluation.summary["per_chatbot"]["bank"]}}
    page = write_report(tmp_path, summary=summary).read_text()
    assert "pass --predictions FILE" in page and "pass --handoff FILE" in page
    assert "pass --champions-vs-global CSV" in page and "pass --replay-turns FILE" in page
    assert "pass --tuning FILE" in page
    assert "&lt;b&gt;bank&lt;/b&gt;" in page and "<b>bank</b>" not in page


def test_the_plots_are_figures_for_notebooks(evaluation: Evaluation) -> None:
    figures = [plots.leaderboard(evaluation.summary), plots.latency(evaluation.frame),
               plots.handoff_timings(HANDOFF), plots.champion_vs_global(champions_vs_global()),
               plots.rank_histogram(evaluation.frame)]
    assert all(isinstance(f, Figure) for f in figures)
    assert all(plots.png(f).startswith(b"\x89PNG") for f in figures)
    assert len(plots.leaderboard(evaluation.summary).axes) == 3  # all chatbots, bank, weather


def test_truth_rank_reads_labels_when_known_and_texts_otherwise() -> None:
    labelled = {"truth_label": "b", "truth_text": "x", "suggested_labels": ["a", "b"], "suggested_texts": ["x", "y"]}
    assert plots.truth_rank(labelled) == 2
    free = {"truth_label": None, "truth_text": "Hello  there", "suggested_labels": [None, None],
            "suggested_texts": ["hi", "hello there"]}
    assert plots.truth_rank(free) == 2
    assert plots.truth_rank({**free, "suggested_texts": ["no"]}) == plots.MISS


def test_a_missing_figure_leaves_an_empty_cell_not_a_failure(evaluation: Evaluation, tmp_path: Path) -> None:
    summary = json.loads(json.dumps(evaluation.summary))
    summary["per_chatbot"]["bank"]["bm25(k1=1.2)"]["recall@1"] = None  # JSON null: not computed
    handoff = {**HANDOFF, "claim_ms": {"p50": None, "p99": 30.0}}
    page = write_report(tmp_path, summary=summary, handoff=handoff).read_text()
    assert page.count("<img ") == 4  # leaderboard: all chatbots, bank, weather; handoff timings
    assert "<tr><td>bm25(k1=1.2)</td><td></td>" in page  # bank's row, its recall@1 cell empty
    assert isinstance(plots.leaderboard(summary), Figure)


def test_long_strategy_names_keep_both_ends_in_plots() -> None:
    short = plots._short("tfidf(ngram_range=(1, 2), sublinear_tf=True, min_df=9)")
    assert len(short) == 44 and short.startswith("tfidf(ngram_range=") and short.endswith("min_df=9)")
