"""The recorded-conversation format: round trip and every validation rule, with line and field named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from copilot.data.records import DatasetError, load_dataset, parse_lines, save_dataset

CHATBOT = {"type": "chatbot", "chatbot": "shop", "responses": {"hello": "Hello!", "ask_id": "Your order id?"}}
CONV = {
    "type": "conversation",
    "conversation_id": "c1",
    "chatbot": "shop",
    "source": "test",
    "escalation_index": 3,
    "outcome": "resolved",
    "turns": [
        {"role": "customer", "text": "hi", "at": "2026-01-01T10:00:00Z"},
        {"role": "bot", "text": "Hello!", "label": "hello"},
        {"role": "customer", "text": "my order is late", "at": "2026-01-01T10:00:05+00:00"},
        {"role": "agent", "text": "Your order id?", "label": "ask_id", "options": ["ask_id", "hello"],
         "draft": "id pls"},
        {"role": "customer", "text": "42"},
        {"role": "agent", "text": "Found it, it arrives today."},
    ],
}


def lines(*objs: object) -> list[str]:
    return [json.dumps(o) for o in objs]


def problems_of(*objs: object) -> list[str]:
    _, problems = parse_lines(lines(*objs))
    return [str(p) for p in problems]


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines(CHATBOT, CONV)) + "\n")
    dataset = load_dataset(src)
    out = tmp_path / "out.jsonl"
    save_dataset(dataset, out)
    again = load_dataset(out)
    assert again == dataset
    conv = again.conversations[0]
    assert [t.role for t in conv.turns] == ["customer", "bot", "customer", "agent", "customer", "agent"]
    assert conv.turns[3].options == ("ask_id", "hello") and conv.turns[3].draft == "id pls"
    assert conv.bot_phase == conv.turns[:3] and conv.agent_turn_indices() == [3, 5]
    assert json.loads(out.read_text().splitlines()[1]) == CONV


def test_sample_data_is_valid(sample_path: Path) -> None:
    dataset = load_dataset(sample_path)
    assert len(dataset.chatbots) == 3 and len(dataset.conversations) == 48
    assert {c.outcome for c in dataset.conversations} == {"resolved", "handed_back", "abandoned"}


def test_type_defaults_to_conversation() -> None:
    conv = copy.deepcopy(CONV)
    del conv["type"]
    dataset, problems = parse_lines(lines(CHATBOT, conv))
    assert not problems and len(dataset.conversations) == 1


def mutated(path: str, value: object, base: dict | None = None) -> dict:
    obj = copy.deepcopy(base or CONV)
    target = obj
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return obj


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("conversation_id", DELETE, "line 2: conversation_id: is required"),
        ("conversation_id", 7, "line 2: conversation_id: must be a string, not int"),
        ("chatbot", "a b", "line 2: chatbot: must match"),
        ("source", "", "line 2: source: must not be empty"),
        ("outcome", "lost", "line 2: outcome: must be one of handed_back, resolved, abandoned, not 'lost'"),
        ("turns", [], "line 2: turns: must be a non-empty list"),
        ("turns", DELETE, "line 2: turns: is required"),
        ("turns.0", "hi", "line 2: turns[0]: must be an object, not str"),
        ("turns.0.role", "wizard", "line 2: turns[0].role: must be one of customer, bot, agent, tool, not 'wizard'"),
        ("turns.0.text", "", "line 2: turns[0].text: must not be empty"),
        ("turns.0.text", "x" * 10_001, "line 2: turns[0].text: holds 10001 characters; the limit is 10000"),
        ("turns.0.at", "yesterday", "line 2: turns[0].at: must be an ISO 8601 time with a time zone"),
        ("turns.0.at", "2026-01-01T10:00:00", "line 2: turns[0].at: must be an ISO 8601 time with a time zone"),
        ("turns.0.label", "hello", "line 2: turns[0].label: is for agent and bot turns only"),
        ("turns.3.label", "with space", "line 2: turns[3].label: must be 1 to 200 characters without spaces"),
        ("turns.3.label", "refund", "line 2: turns[3].label: 'refund' is not in the response set of chatbot 'shop'"),
        ("turns.3.options", "ask_id", "line 2: turns[3].options: must be a list of labels"),
        ("turns.1.options", ["hello"], "line 2: turns[1].options: is for agent turns only"),
        ("turns.1.draft", "hi", "line 2: turns[1].draft: is for agent turns only"),
        ("turns.0.mood", "sad", "line 2: turns[0].mood: is not a field of this format"),
        ("color", "red", "line 2: color: is not a field of this format"),
        ("escalation_index", DELETE, "line 2: escalation_index: is required"),
        ("escalation_index", "3", "line 2: escalation_index: must be an integer, not str"),
        ("escalation_index", 0, "line 2: escalation_index: must be between 1 and the number of turns (6)"),
        ("escalation_index", 7, "line 2: escalation_index: must be between 1 and the number of turns (6)"),
        ("escalation_index", 4, "line 2: turns[3].role: an agent turn cannot come before the escalation"),
        ("turns.4.role", "bot", "line 2: turns[4].role: a bot turn cannot come between agent turns"),
        ("meta", [], "line 2: meta: must be an object"),
        ("type", "dialogue", "line 2: type: must be 'conversation' or 'chatbot', not 'dialogue'"),
    ],
)
def test_every_validation_error_names_line_and_field(path: str, value: object, expected: str) -> None:
    found = problems_of(CHATBOT, mutated(path, value))
    assert any(p.startswith(expected) for p in found), found


def test_bot_phase_needs_a_customer_turn() -> None:
    conv = mutated("escalation_index", 2, mutated("turns.0.role", "bot"))
    del conv["turns"][0]
    conv["escalation_index"] = 1
    assert any("bot phase must hold at least one customer turn" in p for p in problems_of(CHATBOT, conv))


@pytest.mark.parametrize(
    ("bot", "expected"),
    [
        (mutated("responses", DELETE, CHATBOT), "line 1: responses: is required"),
        (mutated("responses", ["hello"], CHATBOT), "line 1: responses: must be an object"),
        (mutated("responses", {"hello": ""}, CHATBOT), "line 1: responses.hello: the template must be"),
        (mutated("responses", {"two words": "x"}, CHATBOT), "line 1: responses.two words: a label is"),
        (mutated("chatbot", DELETE, CHATBOT), "line 1: chatbot: is required"),
    ],
)
def test_chatbot_line_errors(bot: dict, expected: str) -> None:
    found = problems_of(bot, CONV)
    assert any(p.startswith(expected) for p in found), found


def test_file_level_errors_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps(CHATBOT), "{not json", "[1, 2]", json.dumps(CONV), json.dumps(CONV),
                               json.dumps(CHATBOT)]) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    found = [str(p) for p in info.value.problems]
    assert found[0].startswith("line 2: not valid JSON")
    assert found[1] == "line 3: must be a JSON object, not list"
    assert "line 5: conversation_id: 'c1' appears again (first on line 4)" in found
    assert "line 6: chatbot: 'shop' is declared again (first on line 1)" in found
    assert str(path) in str(info.value)


def test_label_needs_a_declared_chatbot() -> None:
    found = problems_of(CONV)
    assert any("line 1: turns[1].label: chatbot 'shop' has no response set" in p for p in found), found


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(tmp_path / "nope.jsonl")


def test_contexts_hold_only_what_came_before(tmp_path: Path) -> None:
    from copilot.data.context import context_from_events, contexts_for

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines(CHATBOT, CONV)) + "\n")
    conv = load_dataset(src).conversations[0]
    contexts = list(contexts_for(conv))
    assert [i for i, _ in contexts] == [3, 5]
    _, ctx = contexts[1]
    assert [t.text for t in ctx.turns] == [t.text for t in conv.turns[:5]]
    assert ctx.labels() == ["hello", "ask_id"] and ctx.last("customer").text == "42"
    # the server's view of the same state, from stored events, is the same context
    events = [{"seq": s + (s >= 4), "kind": "message", "role": t.role, "text": t.text, "label": t.label}
              for s, t in enumerate(conv.turns[:5], start=1)]
    events.insert(3, {"seq": 4, "kind": "escalated"})
    assert context_from_events("shop", reversed(events)) == ctx


# ---------------------------------------------------------------------------------------------------------------
# Tool turns, through the generic importer (`copilot import jsonl`)

TOOL_CONV = {
    "type": "conversation",
    "conversation_id": "c2",
    "chatbot": "shop",
    "source": "test",
    "escalation_index": 5,
    "outcome": "handed_back",
    "turns": [
        {"role": "customer", "text": "hi"},
        {"role": "bot", "text": "Hello!", "label": "hello"},
        {"role": "customer", "text": "where is order 42?"},
        {"role": "tool", "by": "bot", "name": "order_status", "request": {"order": "42"},
         "result": {"items": [{"order": "42", "status": "late", "minutes": 20}], "total": 1},
         "at": "2026-01-01T10:00:07Z"},
        {"role": "customer", "text": "I want a person"},
        {"role": "agent", "text": "Let me check that for you."},
        {"role": "tool", "by": "agent", "name": "order_status", "request": {"order": "42"},
         "error": "the order system did not answer"},
        {"role": "tool", "by": "agent", "name": "order_status", "request": {"order": "42"},
         "result": {"items": [{"order": "42", "status": "on_the_way", "minutes": 5}], "total": 1},
         "meta": {"attempt": 2}},
        {"role": "agent", "text": "It is on its way and arrives in 5 minutes."},
        {"role": "tool", "by": "bot", "name": "opening_hours", "request": {}, "result": {"items": [], "total": 0}},
        {"role": "bot", "text": "Anything else? We are here from 9 am."},
    ],
}


def test_tool_turns_round_trip_through_the_generic_import(tmp_path: Path) -> None:
    from copilot.cli import main as cli

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines(CHATBOT, TOOL_CONV)) + "\n")
    out = tmp_path / "out.jsonl"
    assert cli(["import", "jsonl", str(src), "--out", str(out)]) == 0
    loaded = load_dataset(src)
    assert load_dataset(out) == loaded
    assert json.loads(out.read_text().splitlines()[1]) == TOOL_CONV
    conv = loaded.conversations[0]
    assert [t.maker for t in conv.turns if t.tool] == ["bot", "agent", "agent", "bot"]
    assert conv.turns[6].tool is not None and conv.turns[6].tool.error == "the order system did not answer"
    assert conv.turns[6].tool.result is None and conv.agent_turn_indices() == [5, 8]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("turns.6.name", DELETE, "line 2: turns[6].name: is required"),
        ("turns.6.request", ["42"], "line 2: turns[6].request: must be an object (field -> value), not list"),
        ("turns.6.request", DELETE, "line 2: turns[6].request: is required: an object"),
        ("turns.6.by", "customer", "line 2: turns[6].by: must be one of bot, agent (who made the lookup), not "
                                   "'customer'"),
        ("turns.6.name", "n" * 101, "line 2: turns[6].name: holds 101 characters; the limit is 100"),
        ("turns.7.result", {"blob": "z" * 65_536}, "line 2: turns[7]: the tool event holds 65605 bytes of JSON; "
                                                   "the limit is 65536"),
        ("turns.7.result", [1], "line 2: turns[7].result: must be an object, not list"),
        ("turns.6.text", "checking", "line 2: turns[6].text: is not a field of this format"),
        ("turns.6.label", "hello", "line 2: turns[6].label: is not a field of this format"),
        ("turns.3.by", "agent", "line 2: turns[3].role: an agent's tool turn cannot come before the escalation"),
        ("turns.6.by", "bot", "line 2: turns[6].role: a bot's tool turn cannot come between agent turns"),
    ],
)
def test_a_bad_tool_turn_is_named_by_line_and_field_and_nothing_is_written(
        path: str, value: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from copilot.cli import main as cli

    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines(CHATBOT, mutated(path, value, TOOL_CONV))) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous content\n")
    assert cli(["import", "jsonl", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert out.read_text() == "previous content\n"
    assert list(tmp_path.glob(".out.jsonl.*")) == []
