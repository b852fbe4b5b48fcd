"""Suggestion latency per strategy: p50/p95 of single ``suggest`` calls on held-out contexts, after a warm-up.

    PYTHONPATH=src python benchmarks/suggest.py [--splits DIR] [--contexts 300] [--only bm25,dense] [--llm]
        [--task evals/star.yaml]

Data: ``--splits``/``$COPILOT_SPLITS_DIR`` (train/dev/test.jsonl), else STAR from ``$COPILOT_STAR_DIR`` (imported
and split with seed 0), else the project's sample (data/sample). Each strategy is fitted on train and asked for
k=3 suggestions for contexts of the test split, one call at a time, as the live server asks, with the settings
the task file gives it (``--task``, default evals/star.yaml; ``--task ''`` for each family's defaults). A
baseline (a dict lookup of the chatbot's response set) is timed in the same run, since the machine is shared and
noisy.
``--llm`` adds the llm strategy against a local llama.cpp server (slow; few contexts).
Goals: lexical (tfidf, bm25) p95 <= 5 ms, dense p95 <= 25 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOALS_MS = {"tfidf": 5.0, "bm25": 5.0, "dense": 25.0}
FAMILIES = ["tfidf", "bm25", "dense", "classifier", "hybrid"]


def load_splits(folder: str | None) -> tuple[str, dict[str, Any]]:
    from copilot.data.records import load_dataset
    from copilot.data.splits import split_dataset

    if folder:
        return f"splits in {folder}", {n: load_dataset(Path(folder) / f"{n}.jsonl") for n in ("train", "dev", "test")}
    star = os.environ.get("COPILOT_STAR_DIR")
    if star:
        from copilot.data.importers.star import import_star

        dataset, _ = import_star(star)
        return f"STAR at {star}", dict(split_dataset(dataset, seed=0))
    return "the project's sample (COPILOT_STAR_DIR unset)", dict(
        split_dataset(load_dataset(ROOT / "data" / "sample" / "conversations.jsonl"), seed=0))


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default=os.environ.get("COPILOT_SPLITS_DIR"))
    parser.add_argument("--contexts", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--only", help="comma-separated family names")
    parser.add_argument("--llm", action="store_true", help="also the llm strategy on a local llama.cpp server")
    parser.add_argument("--task", default=str(ROOT / "evals" / "star.yaml"),
                        help="the settings of each family come from this task file ('' for the defaults)")
    parser.add_argument("--cache-dir", default=os.environ.get("COPILOT_CACHE_DIR"),
                        help="embedding cache for dense (fitting reads it; suggestions always encode anew)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    from copilot.data.context import contexts_for
    from copilot.strategies import make_strategy
    from copilot.strategies.embeddings import Embedder, EmbeddingCache

    source, splits = load_splits(args.splits)
    cache = EmbeddingCache(args.cache_dir) if args.cache_dir else None
    contexts = [c for conv in splits["test"].conversations for _, c in contexts_for(conv)]
    step = max(1, len(contexts) // args.contexts)
    contexts = contexts[::step][: args.contexts]
    print(f"data: {source}; fitted on train ({len(splits['train'].conversations)} conversations), "
          f"{len(contexts)} test contexts, k=3, single suggest calls after {args.warmup} warm-up calls")

    responses = {b: dict(splits["train"].responses(b)) for b in splits["train"].chatbot_ids()}
    base = []
    for context in contexts:
        start = time.perf_counter()
        list(responses.get(context.chatbot, {}).items())[:3]
        base.append((time.perf_counter() - start) * 1000)

    task_params: dict[str, dict[str, Any]] = {}
    if args.task:
        from copilot.evaluation.tasks import load_task

        task_params = {spec.id: dict(spec.params) for spec in load_task(args.task).strategies}
    names = args.only.split(",") if args.only else list(FAMILIES)
    rows: list[tuple[str, float, float]] = []
    server = None
    for name in [*names, *(["llm"] if args.llm else [])]:
        params: dict[str, Any] = dict(task_params.get(name, {}))
        picked = contexts
        if name == "llm":
            from copilot.settings import Settings
            from copilot.strategies.llm_server import LOCAL_MODEL, local_llm_server

            server = local_llm_server(model=Settings.from_env().llm_gguf)
            params = {"base_url": server.__enter__(), "model": LOCAL_MODEL, "few_shot": 2, "max_tokens": 24}
            picked = contexts[:10]
        strategy = make_strategy(name, params).use_embedding_cache(cache).fit(splits["train"])
        for context in picked[: min(args.warmup, len(picked))]:
            strategy.suggest(context, 3)
        times = []
        for context in tqdm(picked, desc=name, unit="call", leave=False):
            for part in [strategy, *getattr(strategy, "members_", [])]:
                if hasattr(part, "embedder_"):  # a live context's latest message is new text: never read it cached
                    part.embedder_ = Embedder(None)
            start = time.perf_counter()
            strategy.suggest(context, 3)
            times.append((time.perf_counter() - start) * 1000)
        rows.append((name, percentile(times, 50), percentile(times, 95)))
        print(f"{name}: {strategy.describe()}", flush=True)
        if server is not None:
            server.__exit__(None, None, None)
            server = None

    print(f"{'strategy':<12} {'p50 ms':>9} {'p95 ms':>9}  goal")
    print(f"{'(baseline)':<12} {percentile(base, 50):>9.3f} {percentile(base, 95):>9.3f}  dict lookup")
    for name, p50, p95 in rows:
        goal = GOALS_MS.get(name)
        verdict = f"p95 <= {goal:g} ms: {'met' if p95 <= goal else 'NOT met'}" if goal else "-"
        print(f"{name:<12} {p50:>9.2f} {p95:>9.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
