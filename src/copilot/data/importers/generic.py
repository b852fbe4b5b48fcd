"""Import a team's own logs already written in the documented format (docs/records.md).

The import validates every line, reports every problem with its line number and field, and writes nothing
unless the whole file is valid. What it writes is the normalised form: chatbots first, fields in a fixed order.
"""

from __future__ import annotations

import os

from copilot.data.records import Dataset, load_dataset, save_dataset


def import_jsonl(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Dataset:
    """Validate ``source`` and write it, normalised, to ``out``. Raises :class:`copilot.data.records.DatasetError`."""
    dataset = load_dataset(source)
    save_dataset(dataset, out)
    return dataset
