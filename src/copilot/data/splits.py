"""Dataset statistics and the seeded split by conversation (``copilot data stats|split``)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from copilot.data.records import Conversation, Dataset, save_dataset

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def dataset_stats(dataset: Dataset) -> pd.DataFrame:
    """Per-chatbot counts: conversations, agent turns, labelled agent turns, tool turns (all, and those the agent
    made), response-set size, and more.

    One row per chatbot, sorted by the number of conversations (most first), with a final ``TOTAL`` row.
    """
    rows = []
    for bot in dataset.chatbot_ids():
        convs = dataset.for_chatbot(bot)
        agent = [t for c in convs for t in c.turns if t.role == "agent"]
        rows.append(
            {
                "chatbot": bot,
                "conversations": len(convs),
                "turns": sum(len(c.turns) for c in convs),
                "bot_turns": sum(1 for c in convs for t in c.turns if t.role == "bot"),
                "agent_turns": len(agent),
                "labelled_agent_turns": sum(1 for t in agent if t.label is not None),
                "tool_turns": sum(1 for c in convs for t in c.turns if t.role == "tool"),
                "agent_tool_turns": sum(1 for c in convs for t in c.turns if t.role == "tool" and t.maker == "agent"),
                "response_set": len(dataset.responses(bot)),
                "resolved": sum(1 for c in convs if c.outcome == "resolved"),
                "handed_back": sum(1 for c in convs if c.outcome == "handed_back"),
                "abandoned": sum(1 for c in convs if c.outcome == "abandoned"),
            }
        )
    columns = ["chatbot", "conversations", "turns", "bot_turns", "agent_turns", "labelled_agent_turns", "tool_turns",
               "agent_tool_turns", "response_set", "resolved", "handed_back", "abandoned"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values(["conversations", "chatbot"], ascending=[False, True], ignore_index=True)
    total = frame.drop(columns=["chatbot"]).sum(numeric_only=True).to_dict()
    total["chatbot"] = "TOTAL"
    total["response_set"] = len({(b, label) for b in dataset.chatbot_ids() for label in dataset.responses(b)})
    return pd.concat([frame, pd.DataFrame([total], columns=columns)], ignore_index=True)


def _rng(seed: int, chatbot: str) -> random.Random:
    # One stream per chatbot, so adding a chatbot to the data never moves another chatbot's split.
    digest = hashlib.sha256(f"{seed}:{chatbot}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _cut(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes for ``n`` items: largest remainders, and every split non-empty when there are enough items."""
    raw = [f * n for f in fractions]
    sizes = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (sizes[i] - raw[i], i))[: n - sum(sizes)]:
        sizes[i] += 1
    if n >= len(fractions):
        for i, size in enumerate(sizes):
            if size == 0 and fractions[i] > 0:
                donor = max(range(len(sizes)), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes


def split_dataset(
    dataset: Dataset, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, Dataset]:
    """Split by conversation, per chatbot, reproducibly: train/dev/test with ``fractions`` of each chatbot.

    A conversation lands in exactly one split (no turn of it can leak into another). The result depends only on
    the seed and the conversation ids, not on the order of the file.
    """
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers that sum to 1, not {tuple(fractions)}")
    parts: dict[str, list[Conversation]] = {name: [] for name in SPLITS}
    for bot in dataset.chatbot_ids():
        convs = sorted(dataset.for_chatbot(bot), key=lambda c: c.conversation_id)
        _rng(seed, bot).shuffle(convs)
        start = 0
        for name, size in zip(SPLITS, _cut(len(convs), fractions), strict=True):
            parts[name].extend(convs[start : start + size])
            start += size
    out = {}
    for name in SPLITS:
        part = dataset.subset(sorted(parts[name], key=lambda c: (c.chatbot, c.conversation_id)))
        # Every split keeps every response set: a chatbot's templates are not data to be split.
        part.chatbots = dict(dataset.chatbots)
        out[name] = part
    return out


def write_splits(splits: dict[str, Dataset], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    paths = {}
    for name, part in splits.items():
        paths[name] = out / f"{name}.jsonl"
        save_dataset(part, paths[name])
    return paths
