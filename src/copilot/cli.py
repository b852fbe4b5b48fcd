"""The ``copilot`` command line: everything the notebooks do, for scripts and CI (W10).

Each subcommand parses its arguments and calls one library function; no logic lives here.
Exit codes: 0 success, 1 failure while running, 2 bad input (arguments or data).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from copilot.records import DatasetError
from copilot.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_import_star(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.importers.star import EscalationRule, download_star, import_star
    from copilot.records import save_dataset

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
        Path(args.report).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"wrote {report.imported} conversations of {report.chatbots} chatbots to {args.out}")
    return 0


def _cmd_import_jsonl(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.importers.generic import import_jsonl

    dataset = import_jsonl(args.file, args.out)
    print(f"wrote {len(dataset.conversations)} conversations of {len(dataset.chatbots)} chatbots to {args.out}")
    return 0


def _cmd_data_stats(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.data import dataset_stats
    from copilot.records import load_dataset

    frame = dataset_stats(load_dataset(args.file))
    print(frame.to_json(orient="records", indent=2) if args.json else frame.to_string(index=False))
    return 0


def _cmd_data_split(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.data import split_dataset, write_splits
    from copilot.records import load_dataset

    try:
        fractions = tuple(float(x) for x in args.fractions.split(","))
    except ValueError:
        raise SystemExit(f"copilot data split: --fractions must be three numbers like 0.7,0.1,0.2, "
                         f"not {args.fractions!r}") from None
    splits = split_dataset(load_dataset(args.file), fractions, seed=args.seed)
    for name, path in write_splits(splits, args.out_dir).items():
        print(f"{name}: {len(splits[name].conversations)} conversations -> {path}")
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.demo import run_demo

    return run_demo(settings)


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from copilot.report import load_table, write_report
    from copilot.settings import find_project_root

    sources = {name: path for name, path in (("summary", args.summary), ("predictions", args.predictions),
                                             ("handoff", args.handoff), ("replay turns", args.replay_turns),
                                             ("champions vs global", args.champions_vs_global)) if path}
    path = write_report(
        args.out if args.out is not None else find_project_root() / "reports",
        summary=json.loads(Path(args.summary).read_text()) if args.summary else {},
        predictions=load_table(args.predictions) if args.predictions else None,
        handoff=json.loads(Path(args.handoff).read_text()) if args.handoff else None,
        replay_turns=load_table(args.replay_turns) if args.replay_turns else None,
        champions_vs_global=load_table(args.champions_vs_global) if args.champions_vs_global else None,
        title=args.title,
        sources=sources,
    )
    print(f"wrote {path}")
    return 0


def _cmd_mlflow_ui(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import shlex

    from copilot.tracking import mlflow_ui_command

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

    report = sub.add_parser("report", help="write the HTML report for product (index.html)")
    report.add_argument("--out", help="the folder to write index.html into (default: reports/ in the project)")
    report.add_argument("--summary", metavar="FILE", help="the evaluation's summary.json")
    report.add_argument("--predictions", metavar="FILE", help="the per-turn predictions (.parquet, .jsonl, .csv)")
    report.add_argument("--handoff", metavar="FILE", help="the replay's handoff.json")
    report.add_argument("--replay-turns", metavar="FILE", help="the replay's per-turn table (turns.parquet)")
    report.add_argument("--champions-vs-global", metavar="CSV",
                        help="per chatbot: champion, global and their recall@1 with _low/_high bounds")
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
    except DatasetError as exc:
        print(f"copilot: invalid data: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"copilot: {exc}", file=sys.stderr)
        return 2
