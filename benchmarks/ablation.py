"""Each family of a task with and without the lookups (tool turns): fitted on train+dev, scored on test.

    PYTHONPATH=src python benchmarks/ablation.py --splits data/generated/star/splits [--task evals/star.yaml]
        [--only classifier,tfidf] [--out ablation.md]

"Without" removes every tool turn from train, dev and test (the conversations as the importer wrote them before
it kept lookups); everything else is the task's settings (``params``, not the grid). Prints, per family, recall@1
and recall@3 with 95% intervals resampled by conversation, and the paired difference with - without on the same
agent turns (matched by conversation and position among its agent turns), overall and on the turns right after a
lookup. Takes about as long as two evaluations of the task (the classifier's fits dominate).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def without_tools(data: Any) -> Any:
    from copilot.data.records import Dataset

    out = []
    for conv in data.conversations:
        before = sum(1 for t in conv.turns[: conv.escalation_index] if t.role == "tool")
        out.append(dataclasses.replace(conv, turns=tuple(t for t in conv.turns if t.role != "tool"),
                                       escalation_index=conv.escalation_index - before))
    return Dataset(dict(data.chatbots), out)


def after_lookup(data: Any) -> set[tuple[str, int]]:
    """(conversation, ordinal among its agent turns) of the agent turns that come right after a tool turn."""
    out = set()
    for conv in data.conversations:
        for ordinal, index in enumerate(conv.agent_turn_indices()):
            if index > 0 and conv.turns[index - 1].role == "tool":
                out.add((conv.conversation_id, ordinal))
    return out


def per_turn(frame: Any, metric: str) -> Any:
    """Per agent turn value of ``metric``, keyed by (conversation, ordinal among its agent turns)."""
    from copilot.evaluation.metrics import turn_scores

    frame = frame.copy()
    frame["ordinal"] = frame.groupby("conversation_id")["turn_index"].rank(method="first").astype(int) - 1
    values = turn_scores(frame, metric)
    values = values.merge(frame[["conversation_id", "turn_index", "ordinal"]], on=["conversation_id", "turn_index"])
    return values.set_index(["conversation_id", "ordinal"])["value"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default=os.environ.get("COPILOT_SPLITS_DIR"), required=False)
    parser.add_argument("--task", default=str(ROOT / "evals" / "star.yaml"))
    parser.add_argument("--only", help="comma-separated strategy ids of the task (default: all)")
    parser.add_argument("--out", help="also write the table here (Markdown)")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)
    if not args.splits:
        parser.error("--splits DIR (train/dev/test.jsonl) or COPILOT_SPLITS_DIR is required")

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from copilot.data.records import Dataset, load_dataset
    from copilot.evaluation.metrics import paired_interval, score
    from copilot.evaluation.runs import predict
    from copilot.evaluation.tasks import load_task
    from copilot.settings import Settings
    from copilot.strategies import make_strategy
    from copilot.strategies.embeddings import EmbeddingCache

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    task = load_task(args.task)
    splits = {name: load_dataset(Path(args.splits) / f"{name}.jsonl") for name in ("train", "dev", "test")}
    train = Dataset({**splits["train"].chatbots, **splits["dev"].chatbots},
                    splits["train"].conversations + splits["dev"].conversations)
    test = splits["test"]
    fresh = after_lookup(test)
    cache = EmbeddingCache(Settings.from_env().cache_dir)
    wanted = set(args.only.split(",")) if args.only else None
    specs = [s for s in task.strategies if wanted is None or s.id in wanted]
    lines = ["| family | lookups | recall@1 | recall@3 | with − without, recall@1 | right after a lookup "
             f"({len(fresh)} turns) | fit s |", "|---|---|---|---|---|---|---|"]
    bar = tqdm(total=2 * len(specs), desc="ablation", unit="fit")
    for spec in specs:
        rows: dict[bool, Any] = {}
        for tools in (True, False):
            tr, te = (train, test) if tools else (without_tools(train), without_tools(test))
            started = time.perf_counter()
            strategy = make_strategy(spec.name, dict(spec.params)).use_embedding_cache(cache).fit(tr)
            frame = predict(strategy, te, strategy_id=spec.id, k=task.k)
            scores = score(frame, ["recall@1", "recall@3"], n_boot=args.n_boot, seed=0)
            rows[tools] = (frame, scores, time.perf_counter() - started)
            bar.update(1)
        with_r1, without_r1 = per_turn(rows[True][0], "recall@1"), per_turn(rows[False][0], "recall@1")
        both = with_r1.index.intersection(without_r1.index)
        groups = [c for c, _ in both]
        paired = paired_interval(without_r1.loc[both].to_numpy(), with_r1.loc[both].to_numpy(), groups,
                                 n_boot=args.n_boot, seed=0)
        near = [key for key in both if key in fresh]
        gain = float(np.mean(with_r1.loc[near].to_numpy() - without_r1.loc[near].to_numpy())) if near else float("nan")
        for tools in (True, False):
            _, s, seconds = rows[tools]
            diff = (f"{paired.diff:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}]" if tools else "")
            near_text = f"{gain:+.3f}" if tools else ""
            lines.append(f"| {spec.id} | {'with' if tools else 'without'} | {s['recall@1']:.3f} "
                         f"[{s['recall@1_low']:.3f}, {s['recall@1_high']:.3f}] | {s['recall@3']:.3f} "
                         f"[{s['recall@3_low']:.3f}, {s['recall@3_high']:.3f}] | {diff} | {near_text} | "
                         f"{seconds:.0f} |")
        print("\n".join(lines[-2:]), flush=True)
    bar.close()
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
