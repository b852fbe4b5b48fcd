"""Evaluation tasks: YAML files in ``evals/`` loaded into a :class:`Task` (STYLE: registries, tasks, metrics).

A task says what to evaluate and tune; :func:`copilot.evaluation.runs.run` and
:func:`copilot.evaluation.tuning.tune` read only the task (new options go into the task file, not into function
arguments). Schema (docs/evaluation.md)::

    include: base.yaml            # optional, a path or a list, relative to this file; this file's keys win
    name: star                    # default: the file's stem
    data: star                    # "star" (the imported STAR file in the work folder), "sample", or a path
    split: {seed: 0, fractions: [0.7, 0.1, 0.2]}
    chatbots: all                 # or a list of chatbot ids
    k: 5                          # suggestions per turn
    metrics: [recall@1, recall@3, recall@5, mrr, coverage, precision@1, latency_p50, latency_p95, tokens]
    selection_metric: recall@1    # what tuning maximises (or minimises: the metric's higher_is_better)
    n_boot: 1000
    seed: 0                       # the bootstrap's seed
    strategies:
      - name: tfidf               # a registered strategy family
        id: tfidf                 # optional, default the name; unique; the strategy's key in summary.json
        params: {window: 1}       # base settings: what evaluate fits
        grid: {neighbours: [10, 20]}   # what tune searches, on top of params
    knobs:                        # optional: the per-chatbot knobs tune searches on top of each champion
      blend: [0.25, 0.5, 0.75]    # blend weights tried with a partner (default; [] searches no blend)
      partner: null               # a strategy id: always blend with it (default: per chatbot the best candidate
                                  # of another family on that chatbot's dev turns)
      precision_target: null      # a precision@1 to reach with a trigger threshold (default null: not searched)
      min_coverage: 0.5           # a threshold is kept only when at least this share of turns keeps a suggestion
    champions:                    # optional, written by ``copilot tune --write-task``
      some_chatbot: {strategy: tfidf, params: {window: 2, neighbours: 10}}

Strategies of an included file are merged by id: an entry with the same id replaces the included one, a new id
is appended, and ``{id: x, drop: true}`` removes one.
"""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from copilot._io import write_text_atomic
from copilot.data.records import Dataset, load_dataset
from copilot.data.splits import DEFAULT_FRACTIONS, split_dataset
from copilot.evaluation.metrics import METRICS
from copilot.settings import Settings
from copilot.strategies import STRATEGIES

KEYS = {"include", "name", "data", "split", "chatbots", "k", "metrics", "selection_metric", "n_boot", "seed",
        "strategies", "champions", "global", "description", "knobs"}
STRATEGY_KEYS = {"name", "id", "params", "grid", "drop"}
KNOB_KEYS = {"blend", "partner", "precision_target", "min_coverage"}


class TaskError(ValueError):
    """A task file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of a task: its family, base settings and search space."""

    name: str
    id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every setting the grid spans (base params overridden by one grid combination), in file order."""
        keys = list(self.grid)
        return [{**self.params, **dict(zip(keys, combo, strict=True))}
                for combo in itertools.product(*(list(self.grid[k]) for k in keys))]


@dataclass(frozen=True)
class KnobSettings:
    """What tune searches per chatbot on top of its champion (:mod:`copilot.strategies.adapted`): blend weights
    with a partner, and a trigger threshold when ``precision_target`` is set (YAML key ``knobs``)."""

    blend: tuple[float, ...] = (0.25, 0.5, 0.75)
    partner: str | None = None  # a strategy id of the task; None: per chatbot, the best of another family
    precision_target: float | None = None  # None: no threshold searched
    min_coverage: float = 0.5


@dataclass(frozen=True)
class Champion:
    """A chatbot's tuned winner: a strategy family and its full settings."""

    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": dict(self.params)}


@dataclass(frozen=True)
class Task:
    """An evaluation task, as loaded from YAML (see the module docstring for the schema)."""

    name: str
    path: Path | None
    data: str = "sample"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    chatbots: tuple[str, ...] | None = None
    k: int = 5
    metrics: tuple[str, ...] = ("recall@1", "recall@3", "recall@5", "mrr", "coverage", "precision@1", "latency_p50",
                                "latency_p95", "tokens")
    selection_metric: str = "recall@1"
    n_boot: int = 1000
    seed: int = 0
    strategies: tuple[StrategySpec, ...] = ()
    champions: Mapping[str, Champion] = field(default_factory=dict)
    global_strategy: Champion | None = None  # the tuned single strategy for every chatbot (YAML key ``global``)
    knobs: KnobSettings = field(default_factory=KnobSettings)
    description: str = ""

    def strategy(self, strategy_id: str) -> StrategySpec:
        for spec in self.strategies:
            if spec.id == strategy_id:
                return spec
        raise KeyError(strategy_id)

    def only(self, ids: Iterable[str]) -> Task:
        """The same task with only the strategies of the given ids (or family names), in task order."""
        wanted = list(ids)
        known = [s.id for s in self.strategies] + [s.name for s in self.strategies]
        for name in wanted:
            if name not in known:
                raise TaskError(_unknown(f"strategy id {name!r} in task {self.name}", name, known))
        return replace(self, strategies=tuple(s for s in self.strategies if s.id in wanted or s.name in wanted))

    def data_path(self, settings: Settings) -> Path:
        """The dataset file ``data`` names: the imported STAR file, the sample, or a path (relative to the task)."""
        if self.data == "star":
            return settings.work_dir / "star.jsonl"
        if self.data == "sample":
            return settings.sample_path
        path = Path(self.data)
        if not path.is_absolute() and self.path is not None and not path.exists():
            path = self.path.parent / path
        return path

    def splits(self, settings: Settings) -> dict[str, Dataset]:
        """train/dev/test of the task's data with the task's split seed and fractions, restricted to its chatbots."""
        parts = split_dataset(load_dataset(self.data_path(settings)), self.split_fractions, seed=self.split_seed)
        return {name: self.restrict(part) for name, part in parts.items()}

    def restrict(self, data: Dataset) -> Dataset:
        """``data`` with only the task's chatbots (all when the task says ``all``)."""
        if self.chatbots is None:
            return data
        keep = set(self.chatbots)
        out = data.subset(c for c in data.conversations if c.chatbot in keep)
        out.chatbots = {k: v for k, v in data.chatbots.items() if k in keep}
        return out


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what}{hint}"


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a task file with its includes resolved (this file's keys win)."""
    path = path.resolve()
    if path in seen:
        raise TaskError(f"{path}: include cycle through {' -> '.join(str(p) for p in seen)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: a task file holds a mapping, not {type(raw).__name__}")
    for key in raw:
        if key not in KEYS:
            raise TaskError(f"{path}: " + _unknown(f"key {key!r}", str(key), KEYS))
    includes = raw.pop("include", None)
    if includes is None:
        return raw
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else list(includes):
        base = _read(path.parent / inc, (*seen, path))
        base.pop("name", None)  # a variant is its own task
        merged = _merge(merged, base)
    return _merge(merged, raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "strategies" and "strategies" in base:
            entries = {(e.get("id") or e.get("name")): e for e in base["strategies"]}
            for entry in value or []:
                entry_id = entry.get("id") or entry.get("name")
                if entry.get("drop"):
                    entries.pop(entry_id, None)
                else:
                    entries[entry_id] = entry
            out["strategies"] = list(entries.values())
        elif key in ("champions", "knobs") and isinstance(base.get(key), dict) and isinstance(value, dict):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


def load_task(path: str | os.PathLike[str], *, only: Iterable[str] | None = None) -> Task:
    """Load and check a task file: keys, strategy families (did-you-mean), metrics, champions.

    Args:
        only: keep just these strategy ids (or family names) before checking the families, e.g. to run a
            task whose other families are not installed here.
    """
    path = Path(path)
    raw = _read(path)
    where = str(path)
    specs = []
    for i, entry in enumerate(raw.get("strategies") or []):
        if not isinstance(entry, dict) or "name" not in entry:
            raise TaskError(f"{where}: strategies[{i}] needs a name")
        for key in entry:
            if key not in STRATEGY_KEYS:
                raise TaskError(f"{where}: strategies[{i}]: " + _unknown(f"key {key!r}", str(key), STRATEGY_KEYS))
        grid = dict(entry.get("grid") or {})
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise TaskError(f"{where}: strategies[{i}].grid.{key} must be a non-empty list")
        specs.append(StrategySpec(str(entry["name"]), str(entry.get("id") or entry["name"]),
                                  dict(entry.get("params") or {}), grid))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise TaskError(f"{where}: strategy ids must be unique, got {ids}")
    split = raw.get("split") or {}
    chatbots = raw.get("chatbots", "all")
    task = Task(
        name=str(raw.get("name") or path.name.removesuffix(".yaml").removesuffix(".yml")),
        path=path,
        data=str(raw.get("data", "sample")),
        split_seed=int(split.get("seed", 0)),
        split_fractions=tuple(float(f) for f in split.get("fractions", DEFAULT_FRACTIONS)),  # type: ignore[arg-type]
        chatbots=None if chatbots in (None, "all") else tuple(str(c) for c in chatbots),
        k=int(raw.get("k", 5)),
        metrics=tuple(raw.get("metrics") or Task.metrics),
        selection_metric=str(raw.get("selection_metric", "recall@1")),
        n_boot=int(raw.get("n_boot", 1000)),
        seed=int(raw.get("seed", 0)),
        strategies=tuple(specs),
        champions={str(bot): Champion(str(c["strategy"]), dict(c.get("params") or {}))
                   for bot, c in (raw.get("champions") or {}).items()},
        global_strategy=(Champion(str(raw["global"]["strategy"]), dict(raw["global"].get("params") or {}))
                         if isinstance(raw.get("global"), dict) and "strategy" in raw["global"] else None),
        description=str(raw.get("description", "")),
        knobs=_knobs(raw.get("knobs"), where),
    )
    if task.knobs.partner is not None and task.knobs.partner not in ids:
        raise TaskError(f"{where}: knobs.partner: " + _unknown(f"strategy id {task.knobs.partner!r}",
                                                               task.knobs.partner, ids))
    if only is not None:
        task = task.only(only)
    for name in [*task.metrics, task.selection_metric]:
        if name not in METRICS:
            raise TaskError(f"{where}: " + _unknown(f"metric {name!r}", name, METRICS.names()))
    for spec in task.strategies:
        if spec.name not in STRATEGIES:
            raise TaskError(f"{where}: " + _unknown(f"strategy {spec.name!r}", spec.name, STRATEGIES.names()))
        allowed = STRATEGIES.get(spec.name).param_names()
        for key in [*spec.params, *spec.grid]:
            if key not in allowed:
                raise TaskError(f"{where}: strategy {spec.id}: "
                                + _unknown(f"setting {key!r} (settings: {allowed})", key, allowed))
    named = list(task.champions.items())
    if task.global_strategy is not None:
        named.append(("global", task.global_strategy))
    for bot, champion in named:
        if champion.strategy not in STRATEGIES:
            raise TaskError(f"{where}: champions.{bot}: "
                            + _unknown(f"strategy {champion.strategy!r}", champion.strategy, STRATEGIES.names()))
    return task


def _knobs(raw: Any, where: str) -> KnobSettings:
    """The ``knobs`` mapping checked: known keys, blend weights in (0, 1], a target in (0, 1], a coverage in [0, 1]."""
    if raw is None:
        return KnobSettings()
    if not isinstance(raw, dict):
        raise TaskError(f"{where}: knobs is a mapping ({', '.join(sorted(KNOB_KEYS))})")
    for key in raw:
        if key not in KNOB_KEYS:
            raise TaskError(f"{where}: knobs: " + _unknown(f"key {key!r}", str(key), KNOB_KEYS))
    default = KnobSettings()
    blend = raw.get("blend", list(default.blend))
    if not isinstance(blend, list) or not all(isinstance(w, int | float) and 0 < w <= 1 for w in blend):
        raise TaskError(f"{where}: knobs.blend is a list of weights in (0, 1], not {blend!r}")
    target = raw.get("precision_target")
    if target is not None and not (isinstance(target, int | float) and 0 < target <= 1):
        raise TaskError(f"{where}: knobs.precision_target is a precision@1 in (0, 1] or null, not {target!r}")
    coverage = raw.get("min_coverage", default.min_coverage)
    if not (isinstance(coverage, int | float) and 0 <= coverage <= 1):
        raise TaskError(f"{where}: knobs.min_coverage is a share of turns in [0, 1], not {coverage!r}")
    partner = raw.get("partner")
    return KnobSettings(tuple(float(w) for w in blend), None if partner is None else str(partner),
                        None if target is None else float(target), float(coverage))


def write_tuned_task(
    task: Task, champions: Mapping[str, Champion], out: str | os.PathLike[str], *, note: str = "",
    global_strategy: Champion | None = None,
) -> Path:
    """Write a task file that includes ``task``'s file and adds the ``champions:`` mapping (and ``global:``, the
    single tuned strategy that evaluate scores beside the champions)."""
    if task.path is None:
        raise TaskError("the tuned task includes its source task file; this task has no file")
    out = Path(out)
    include = os.path.relpath(task.path.resolve(), out.parent.resolve())
    body = {"include": include, "name": f"{task.name}.tuned",
            "champions": {bot: c.as_dict() for bot, c in sorted(champions.items())}}
    if global_strategy is not None:
        body["global"] = global_strategy.as_dict()
    header = "# Written by `copilot tune --write-task`; regenerate it rather than editing by hand.\n"
    if note:
        header += "".join(f"# {line}\n" for line in note.splitlines())
    return write_text_atomic(out, header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
