"""The main job behind ``make demo``: everything end to end on embedded defaults.

Today: import the data (STAR when ``COPILOT_STAR_DIR`` points at it, the project's sample otherwise) and print
per-chatbot statistics. Each stage is a library function that the notebooks and the CLI call too.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

from copilot.data import dataset_stats
from copilot.importers.star import import_star
from copilot.records import Dataset, load_dataset, save_dataset
from copilot.settings import Settings
from copilot.tracking import is_server, mlflow_ui_command


def prepare_data(settings: Settings, say: Callable[[str], None] = print) -> tuple[str, Path, Dataset]:
    """Import the demo data into the work folder; returns (name, path, dataset)."""
    if settings.star_dir is not None:
        out = settings.work_dir / "star.jsonl"
        say(f"importing STAR from {settings.star_dir} ...")
        dataset, report = import_star(settings.star_dir)
        save_dataset(dataset, out)
        (settings.work_dir / "star.import.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        for line in report.lines():
            say(f"  {line}")
        return "star", out, dataset
    say(f"COPILOT_STAR_DIR is not set: running on the sample data {settings.sample_path}")
    return "sample", settings.sample_path, load_dataset(settings.sample_path)


def run_demo(settings: Settings, say: Callable[[str], None] = print) -> int:
    name, path, dataset = prepare_data(settings, say)
    say(f"\n{name}: {len(dataset.conversations)} conversations, {len(dataset.chatbots)} chatbots ({path})\n")
    say(dataset_stats(dataset).to_string(index=False))
    if is_server(settings):
        say(f"\nMLflow: {settings.mlflow_tracking_uri}")
    else:
        say(f"\nMLflow UI over {settings.mlflow_tracking_uri}: `make mlflow-ui` (or `copilot mlflow-ui`) runs\n"
            f"  {shlex.join(mlflow_ui_command(settings))}")
    return 0
