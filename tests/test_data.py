"""Statistics, the seeded split by conversation, and the generic importer's all-or-nothing behaviour."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from copilot.cli import main as cli
from copilot.data.records import Dataset, load_dataset
from copilot.data.splits import dataset_stats, split_dataset


@pytest.fixture
def sample(sample_path: Path) -> Dataset:
    return load_dataset(sample_path)


def test_stats_count_per_chatbot(sample: Dataset) -> None:
    frame = dataset_stats(sample).set_index("chatbot")
    card = sample.for_chatbot("card_support")
    assert frame.loc["card_support", "conversations"] == len(card) == 16
    assert frame.loc["card_support", "agent_turns"] == sum(t.role == "agent" for c in card for t in c.turns)
    assert frame.loc["card_support", "labelled_agent_turns"] == sum(
        t.role == "agent" and t.label is not None for c in card for t in c.turns)
    tools = [t for c in card for t in c.turns if t.role == "tool"]
    assert frame.loc["card_support", "tool_turns"] == len(tools)
    assert frame.loc["card_support", "agent_tool_turns"] == sum(t.by == "agent" for t in tools)
    assert 0 < frame.loc["card_support", "agent_tool_turns"] < len(tools)  # the bot looks up after a hand back
    assert frame.loc["TOTAL", "tool_turns"] == sum(t.role == "tool" for c in sample.conversations for t in c.turns)
    assert frame.loc["pizza_delivery", "response_set"] == 13
    assert frame.loc["TOTAL", "conversations"] == 48
    assert frame.loc["TOTAL", "response_set"] == 34


def test_split_is_reproducible_and_leak_free(sample: Dataset) -> None:
    a = split_dataset(sample, seed=3)
    b = split_dataset(sample, seed=3)
    ids = {name: [c.conversation_id for c in part.conversations] for name, part in a.items()}
    assert ids == {name: [c.conversation_id for c in part.conversations] for name, part in b.items()}
    every = ids["train"] + ids["dev"] + ids["test"]
    assert sorted(every) == sorted(c.conversation_id for c in sample.conversations)  # each exactly once
    assert len(set(every)) == len(every)
    for part in a.values():  # every chatbot appears in every split, and response sets travel along
        assert {c.chatbot for c in part.conversations} == set(sample.chatbots)
        assert part.chatbots == sample.chatbots
    other = split_dataset(sample, seed=4)
    assert [c.conversation_id for c in other["test"].conversations] != ids["test"]


def test_split_ignores_file_order(sample: Dataset) -> None:
    shuffled = Dataset(dict(sample.chatbots), list(sample.conversations))
    random.Random(1).shuffle(shuffled.conversations)
    assert split_dataset(shuffled, seed=0)["test"].conversations == split_dataset(sample, seed=0)["test"].conversations


def test_split_sizes_follow_fractions(sample: Dataset) -> None:
    parts = split_dataset(sample, (0.5, 0.25, 0.25), seed=0)
    assert [len(p.for_chatbot("card_support")) for p in parts.values()] == [8, 4, 4]
    with pytest.raises(ValueError, match="sum to 1"):
        split_dataset(sample, (0.5, 0.5, 0.5))


def test_split_cli_writes_three_files(sample_path: Path, tmp_path: Path) -> None:
    assert cli(["data", "split", str(sample_path), "--out-dir", str(tmp_path), "--seed", "1"]) == 0
    total = sum(len(load_dataset(tmp_path / f"{n}.jsonl").conversations) for n in ("train", "dev", "test"))
    assert total == 48


def test_stats_cli_json(sample_path: Path, capsys) -> None:
    assert cli(["data", "stats", str(sample_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1]["chatbot"] == "TOTAL" and rows[-1]["conversations"] == 48


def test_generic_import_normalises_valid_files(sample_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "team.jsonl"
    assert cli(["import", "jsonl", str(sample_path), "--out", str(out)]) == 0
    assert load_dataset(out) == load_dataset(sample_path)


def test_generic_import_of_bad_input_lists_every_problem_and_writes_nothing(
    sample_path: Path, tmp_path: Path, capsys
) -> None:
    lines = sample_path.read_text().splitlines()
    broken = json.loads(lines[5])
    broken["turns"][0]["role"] = "robot"
    del broken["outcome"]
    lines[5] = json.dumps(broken)
    lines[9] = "{oops"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous content\n")
    assert cli(["import", "jsonl", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 6: outcome: is required" in err
    assert "line 6: turns[0].role: must be one of customer, bot, agent, tool, not 'robot'" in err
    assert "line 10: not valid JSON" in err
    assert out.read_text() == "previous content\n"  # nothing written
    assert list(tmp_path.glob(".out.jsonl.*")) == []  # and no temporary file left behind
