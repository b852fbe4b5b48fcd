"""The ``copilot`` command line: everything the notebooks do, for scripts and CI.

Each subcommand parses its arguments and calls one library function; no logic lives here.
Exit codes: 0 success, 1 failure while running, 2 bad input (arguments or data).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from copilot._io import read_json, write_json
from copilot.data.importers.generic import import_jsonl
from copilot.data.importers.star import EscalationRule, download_star, import_star
from copilot.data.records import Dataset, DatasetError, load_dataset, save_dataset
from copilot.data.splits import dataset_stats, split_dataset, write_splits
from copilot.demo import run_demo
from copilot.evaluation.results import write_results
from copilot.evaluation.runs import run
from copilot.evaluation.tasks import Task, TaskError, load_task
from copilot.evaluation.tuning import tune
from copilot.live.replay import run_replay, select
from copilot.live.replayer import ReplayConfig
from copilot.registry import UnknownNameError
from copilot.report.report import knobs_table, load_table, write_report
from copilot.serving.tracking import WorkbenchTracker, mlflow_ui_command
from copilot.settings import Settings, find_project_root
from copilot.strategies.embeddings import EmbeddingCache

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_import_star(args: argparse.Namespace, settings: Settings) -> int:
    source = args.source
    if args.download:
        print(f"downloading the pinned STAR release into {args.download} ...", file=sys.stderr)
        source = download_star(args.download)
    dataset, report = import_star(
        source if source is not None else settings.star_dir,
        EscalationRule(after_customer_turns=args.escalate_after),
        progress=not args.quiet,
    )
    save_dataset(dataset, args.out)
    for line in report.lines():
        print(line)
    if args.report:
        write_json(args.report, report.as_dict(), default=None)
    print(f"wrote {report.imported} conversations of {report.chatbots} chatbots to {args.out}")
    return 0


def _cmd_import_jsonl(args: argparse.Namespace, settings: Settings) -> int:
    dataset = import_jsonl(args.file, args.out)
    print(f"wrote {len(dataset.conversations)} conversations of {len(dataset.chatbots)} chatbots to {args.out}")
    return 0


def _cmd_data_stats(args: argparse.Namespace, settings: Settings) -> int:
    frame = dataset_stats(load_dataset(args.file))
    print(frame.to_json(orient="records", indent=2) if args.json else frame.to_string(index=False))
    return 0


def _cmd_data_split(args: argparse.Namespace, settings: Settings) -> int:
    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
    except ValueError:
        raise SystemExit(f"copilot data split: --fractions must be three numbers like 0.7,0.1,0.2, "
                         f"not {args.fractions!r}") from None
    splits = split_dataset(load_dataset(args.file), fractions, seed=args.seed)
    for name, path in write_splits(splits, args.out_dir).items():
        print(f"{name}: {len(splits[name].conversations)} conversations -> {path}")
    return 0


def _task_data(args: argparse.Namespace, settings: Settings, task: Task,
               names: tuple[str, str]) -> list[Dataset | str]:
    """The data files given on the command line, or the task's own data split with the task's seed."""
    given = [getattr(args, n) for n in names]
    if all(g is not None for g in given):
        return given
    if any(g is not None for g in given):
        raise SystemExit(f"copilot: give both --{names[0]} and --{names[1]}, or neither (the task's split)")
    splits = task.splits(settings)
    return [splits[n] for n in names]


def _load_task(args: argparse.Namespace) -> Task:
    only = [s for s in args.only.split(",") if s] if args.only else None
    return load_task(args.task, only=only)


def _tracker(args: argparse.Namespace, settings: Settings) -> WorkbenchTracker | None:
    """The MLflow tracker when ``--track`` was given (store: ``--tracking-uri``, else the settings')."""
    if not getattr(args, "track", False):
        return None
    uri = getattr(args, "tracking_uri", None)
    return WorkbenchTracker.from_settings(replace(settings, mlflow_tracking_uri=uri) if uri else settings)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    task = _load_task(args)
    train, test = _task_data(args, settings, task, ("train", "test"))
    run(task, train=train, test=test, out_dir=args.out, tracker=_tracker(args, settings),
        progress=not args.quiet, embedding_cache=EmbeddingCache(settings.cache_dir))
    print(f"wrote {Path(args.out) / 'summary.json'} and predictions.parquet")
    return 0


def _cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    task = _load_task(args)
    train, dev = _task_data(args, settings, task, ("train", "dev"))
    result = tune(task, train=train, dev=dev, out_dir=args.out, tracker=_tracker(args, settings),
                  progress=not args.quiet, embedding_cache=EmbeddingCache(settings.cache_dir))
    if args.write_task:
        path = result.write_task(args.write_task)
        print(f"wrote the tuned task {path}")
    print(f"wrote {Path(args.out) / 'tuning.json'} and leaderboard.csv")
    return 0


def _cmd_results(args: argparse.Namespace, settings: Settings) -> int:
    path = write_results(args.runs, args.out)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(settings)


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.serving.export import export_champions, load_champions  # loads MLflow: only for this command

    champions = load_champions(args.tuning)
    uri = args.tracking_uri or settings.mlflow_tracking_uri
    exported = export_champions(champions, load_dataset(args.train), uri, chatbots=args.chatbot or None,
                                embedding_cache=EmbeddingCache(settings.cache_dir))
    for e in exported:
        print(f"{e.name} v{e.version} @champion: {e.strategy}")
    print(f"exported {len(exported)} champions to {uri}")
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if (args.server is None) == (not args.start_server):
        print("copilot replay: give either --server URL or --start-server", file=sys.stderr)
        return 2
    config = ReplayConfig(concurrency=args.concurrency, agents=args.agents, speed=args.speed,
                          suggestion_wait_s=args.suggestion_wait, expect_suggestions=not args.no_suggestions)
    config.speed_factor()  # refuses a malformed --speed before anything starts
    data = select(load_dataset(args.data), chatbot=args.chatbot, limit=args.limit)
    result = run_replay(data, args.out, server=args.server,
                        admin_key=args.admin_key or settings.handoff_admin_key,
                        tracking_uri=args.tracking_uri or settings.mlflow_tracking_uri, config=config,
                        embedding_cache_dir=settings.cache_dir, server_log_level=settings.replay_server_log_level,
                        progress=not args.quiet)
    report = result.handoff
    print(f"replayed {report['completed']}/{report['conversations']} conversations "
          f"({report['conversations_per_s']:.2f}/s), {report['suggestions_received']}/{report['agent_turns']} "
          f"agent turns with suggestions, {len(report['errors'])} errors; wrote {args.out}")
    tracker = _tracker(args, settings)
    summary_path = Path(args.out) / "summary.json"
    if tracker is not None and summary_path.exists():
        tracker.log_evaluation(result.turns, read_json(summary_path), {},
                               data_path=args.data if args.limit is None and args.chatbot is None else None,
                               stage="replay")
    return 0 if not report["errors"] else 1


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    sources = {name: path for name, path in (("summary", args.summary), ("predictions", args.predictions),
                                             ("handoff", args.handoff), ("replay turns", args.replay_turns),
                                             ("champions vs global", args.champions_vs_global),
                                             ("tuning", args.tuning)) if path}
    path = write_report(
        args.out if args.out is not None else find_project_root() / "reports",
        summary=read_json(args.summary) if args.summary else {},
        predictions=load_table(args.predictions) if args.predictions else None,
        handoff=read_json(args.handoff) if args.handoff else None,
        replay_turns=load_table(args.replay_turns) if args.replay_turns else None,
        champions_vs_global=load_table(args.champions_vs_global) if args.champions_vs_global else None,
        knobs=knobs_table(read_json(args.tuning)) if args.tuning else None,
        title=args.title,
        sources=sources,
    )
    print(f"wrote {path}")
    return 0


def _cmd_mlflow_ui(args: argparse.Namespace, settings: Settings) -> int:
    try:
        command = mlflow_ui_command(settings, host=args.host, port=args.port)
    except ValueError as exc:
        print(f"copilot mlflow-ui: {exc}", file=sys.stderr)
        return 2
    print(shlex.join(command), flush=True)
    if args.print_only:
        return 0
    print(f"MLflow UI at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execvp(command[0], command)  # the server takes over this process, so Ctrl-C reaches it directly


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="copilot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser("import", help="import recorded conversations").add_subparsers(
        dest="source_kind", required=True, metavar="KIND"
    )
    star = imp.add_parser("star", help="import the STAR corpus from its raw folder")
    star.add_argument("--source", help="the STAR folder (default: $COPILOT_STAR_DIR)")
    star.add_argument("--download", metavar="DIR",
                      help="first download the pinned public STAR release into DIR (needs internet)")
    star.add_argument("--out", required=True, help="the dataset file to write (JSON Lines)")
    star.add_argument("--escalate-after", type=int, default=2, metavar="N",
                      help="the bot escalates after the customer's N-th message (default 2)")
    star.add_argument("--report", help="also write the import report as JSON here")
    star.add_argument("--quiet", action="store_true", help="no progress bar")
    star.set_defaults(handler=_cmd_import_star)
    generic = imp.add_parser("jsonl", help="validate and import a file in the documented format")
    generic.add_argument("file")
    generic.add_argument("--out", required=True)
    generic.set_defaults(handler=_cmd_import_jsonl)

    data = sub.add_parser("data", help="dataset statistics and splits").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    stats = data.add_parser("stats", help="per-chatbot statistics")
    stats.add_argument("file")
    stats.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    stats.set_defaults(handler=_cmd_data_stats)
    split = data.add_parser("split", help="seeded train/dev/test split by conversation, per chatbot")
    split.add_argument("file")
    split.add_argument("--out-dir", required=True)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--fractions", default="0.7,0.1,0.2", help="train,dev,test (default 0.7,0.1,0.2)")
    split.set_defaults(handler=_cmd_data_split)

    export = sub.add_parser("export", help="fit each chatbot's champion and register it as copilot-<chatbot>@champion")
    export.add_argument("--tuning", required=True, metavar="FILE",
                        help="tuning.json: per chatbot the champion {strategy, params}")
    export.add_argument("--train", required=True, metavar="FILE", help="the conversations to fit on")
    export.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    export.add_argument("--chatbot", action="append", help="only this chatbot (repeatable)")
    export.set_defaults(handler=_cmd_export)

    rep = sub.add_parser("replay", help="replay recorded conversations through the live handoff server")
    rep.add_argument("--data", required=True, metavar="FILE", help="the conversations to replay")
    rep.add_argument("--out", required=True, metavar="DIR", help="writes turns.parquet, handoff.json, summary.json")
    where = rep.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="URL", help="a running server (with --admin-key or $HANDOFF_ADMIN_KEY)")
    where.add_argument("--start-server", action="store_true",
                       help="start a server with a fresh SQLite database for this replay, stopped after")
    rep.add_argument("--admin-key", help="the running server's admin key (default: $HANDOFF_ADMIN_KEY)")
    rep.add_argument("--tracking-uri", help="the MLflow store whose champions a started server serves")
    rep.add_argument("--chatbot", help="only this chatbot's conversations")
    rep.add_argument("--concurrency", type=int, default=8, metavar="N", help="conversations at once (default 8)")
    rep.add_argument("--agents", type=int, default=3, metavar="K", help="agents racing per chatbot (default 3)")
    rep.add_argument("--speed", default="asap", help="asap (default), realtime or xF (F times faster)")
    rep.add_argument("--limit", type=int, metavar="N", help="only the first N conversations")
    rep.add_argument("--suggestion-wait", type=float, default=10.0, metavar="S",
                     help="seconds an agent turn waits for its suggestions (default 10)")
    rep.add_argument("--no-suggestions", action="store_true", help="the server has no provider: do not wait")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.add_argument("--track", action="store_true", help="log the served suggestions' scores to MLflow "
                     "(the store of --tracking-uri)")
    rep.set_defaults(handler=_cmd_replay)

    evaluate = sub.add_parser("evaluate", help="fit a task's strategies on train, score them on test")
    evaluate.add_argument("task", help="an evaluation task file (evals/*.yaml)")
    evaluate.add_argument("--train", help="training dataset (default: the task's data and split)")
    evaluate.add_argument("--test", help="test dataset (default: the task's data and split)")
    evaluate.add_argument("--out", required=True, help="folder for summary.json, predictions.parquet, run.json")
    evaluate.add_argument("--only", help="comma-separated strategy ids of the task to run (default: all)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress and no leaderboard")
    evaluate.add_argument("--track", action="store_true", help="log the runs to MLflow (one experiment per chatbot)")
    evaluate.add_argument("--tracking-uri", help="MLflow store for --track (default: $MLFLOW_TRACKING_URI, "
                          "else ./mlflow.db)")
    evaluate.set_defaults(handler=_cmd_evaluate)
    tune_cmd = sub.add_parser("tune", help="search each strategy's grid per chatbot on dev; a challenger becomes a "
                              "chatbot's champion only if its paired interval on dev excludes 0")
    tune_cmd.add_argument("task", help="an evaluation task file (evals/*.yaml)")
    tune_cmd.add_argument("--train", help="training dataset (default: the task's data and split)")
    tune_cmd.add_argument("--dev", help="development dataset (default: the task's data and split)")
    tune_cmd.add_argument("--out", required=True, help="folder for tuning.json and leaderboard.csv")
    tune_cmd.add_argument("--write-task", metavar="FILE", help="also write the tuned task (with champions:) here")
    tune_cmd.add_argument("--only", help="comma-separated strategy ids of the task to tune (default: all)")
    tune_cmd.add_argument("--quiet", action="store_true", help="no progress")
    tune_cmd.add_argument("--track", action="store_true", help="log every candidate to MLflow")
    tune_cmd.add_argument("--tracking-uri", help="MLflow store for --track (default: $MLFLOW_TRACKING_URI, "
                          "else ./mlflow.db)")
    tune_cmd.set_defaults(handler=_cmd_tune)
    results = sub.add_parser("results", help="regenerate docs/results.md from evaluation runs (summary.json)")
    results.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="folders written by evaluate")
    results.add_argument("--out", default="docs/results.md")
    results.set_defaults(handler=_cmd_results)
    report = sub.add_parser("report", help="write the HTML report for product (index.html)")
    report.add_argument("--out", help="the folder to write index.html into (default: reports/ in the project)")
    report.add_argument("--summary", metavar="FILE", help="the evaluation's summary.json")
    report.add_argument("--predictions", metavar="FILE", help="the per-turn predictions (.parquet, .jsonl, .csv)")
    report.add_argument("--handoff", metavar="FILE", help="the replay's handoff.json")
    report.add_argument("--replay-turns", metavar="FILE", help="the replay's per-turn table (turns.parquet)")
    report.add_argument("--champions-vs-global", metavar="CSV",
                        help="per chatbot: champion, global and their recall@1 with _low/_high bounds")
    report.add_argument("--tuning", metavar="FILE", help="the tuning's tuning.json (the knobs kept per chatbot)")
    report.add_argument("--title", default="Copilot report")
    report.set_defaults(handler=_cmd_report)

    ui = sub.add_parser("mlflow-ui", help="serve the MLflow UI over the workbench's tracking store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--print-only", action="store_true", help="print the command instead of running it")
    ui.set_defaults(handler=_cmd_mlflow_ui)

    demo = sub.add_parser("demo", help="the main job end to end on embedded defaults")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        return int(args.handler(args, settings))
    except (TaskError, UnknownNameError) as exc:
        print(f"copilot: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"copilot: invalid data: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"copilot: {exc}", file=sys.stderr)
        return 2
