"""The recorded-conversation format (docs/records.md): dataclasses, JSON Lines reading and writing, validation.

A dataset file is JSON Lines. A line is either a chatbot (its response set: label -> template text) or one
recorded conversation. Everything that reads recorded conversations (importers, splits, evaluation, replay,
notebooks) goes through :func:`load_dataset`, so validation happens in one place and its messages always name
the line and the field.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from copilot._io import write_lines_atomic
from copilot.live.protocol import MAX_TEXT_CHARS, MAX_TOOL_EVENT_BYTES, MAX_TOOL_NAME_CHARS

Role = Literal["customer", "bot", "agent", "tool"]
Maker = Literal["bot", "agent"]
Outcome = Literal["handed_back", "resolved", "abandoned"]

ROLES: tuple[Role, ...] = ("customer", "bot", "agent", "tool")
MAKERS: tuple[Maker, ...] = ("bot", "agent")
OUTCOMES: tuple[Outcome, ...] = ("handed_back", "resolved", "abandoned")

# Chatbot ids end up in MLflow experiment and model names and in URLs: keep them to a safe alphabet.
CHATBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")
LABEL = re.compile(r"^[^\s]{1,200}$")


@dataclass(frozen=True)
class ToolCall:
    """A lookup or action made for the conversation (an API call, a knowledge-base query, a CRM lookup) and what it
    returned: ``result`` is a JSON object (``None`` when nothing came back), ``error`` the failure's text if any."""

    name: str
    request: Mapping[str, Any]
    result: Mapping[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "request": dict(self.request)}
        if self.result is not None:
            out["result"] = dict(self.result)
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Turn:
    """One turn of a recorded conversation: a message, or (role ``tool``) a lookup made by the bot or the agent.

    A tool turn has no text; ``by`` says who made it and ``tool`` what was asked and returned. It belongs to the
    agent side: the customer never saw it.

    ``label`` names the response template the message used, where known (agent turns picked from the chatbot's
    response set; bot turns whose intent the bot knows). ``options`` (the labels the agent's suggestion screen
    offered) and ``draft`` (what the agent typed before picking) are agent-only annotations. They describe what
    happened and are never shown to a strategy as context for predicting that same turn.
    """

    role: Role
    text: str
    at: str | None = None
    label: str | None = None
    options: tuple[str, ...] | None = None
    draft: str | None = None
    meta: Mapping[str, Any] | None = None
    by: Maker | None = None
    tool: ToolCall | None = None

    @property
    def maker(self) -> Role:
        """Who made the turn: its role, or for a tool turn the party that made the lookup."""
        return self.by if self.role == "tool" and self.by is not None else self.role

    def to_json(self) -> dict[str, Any]:
        if self.tool is not None:
            out: dict[str, Any] = {"role": self.role, "by": self.by, **self.tool.to_json()}
            if self.at is not None:
                out["at"] = self.at
            if self.meta:
                out["meta"] = dict(self.meta)
            return out
        out = {"role": self.role, "text": self.text}
        if self.at is not None:
            out["at"] = self.at
        if self.label is not None:
            out["label"] = self.label
        if self.options is not None:
            out["options"] = list(self.options)
        if self.draft is not None:
            out["draft"] = self.draft
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class Conversation:
    """A recorded bot-to-human conversation.

    ``escalation_index`` is the index in ``turns`` of the first turn after the escalation: turns before it
    happened with the bot, turns from it on with the human agent (and the customer).
    """

    conversation_id: str
    chatbot: str
    source: str
    turns: tuple[Turn, ...]
    escalation_index: int
    outcome: Outcome
    meta: Mapping[str, Any] | None = None

    @property
    def bot_phase(self) -> tuple[Turn, ...]:
        return self.turns[: self.escalation_index]

    @property
    def agent_phase(self) -> tuple[Turn, ...]:
        return self.turns[self.escalation_index :]

    def agent_turn_indices(self) -> list[int]:
        """Indices of the agent turns (all after the escalation, by validation)."""
        return [i for i, t in enumerate(self.turns) if t.role == "agent"]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "conversation",
            "conversation_id": self.conversation_id,
            "chatbot": self.chatbot,
            "source": self.source,
            "escalation_index": self.escalation_index,
            "outcome": self.outcome,
            "turns": [t.to_json() for t in self.turns],
        }
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass(frozen=True)
class Chatbot:
    """A chatbot and its response set: the templates an agent's suggestion screen offers, by label."""

    chatbot: str
    responses: Mapping[str, str]
    meta: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "chatbot", "chatbot": self.chatbot, "responses": dict(self.responses)}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


@dataclass
class Dataset:
    """Chatbots (with response sets) and the conversations recorded for them."""

    chatbots: dict[str, Chatbot] = field(default_factory=dict)
    conversations: list[Conversation] = field(default_factory=list)

    def for_chatbot(self, chatbot: str) -> list[Conversation]:
        return [c for c in self.conversations if c.chatbot == chatbot]

    def chatbot_ids(self) -> list[str]:
        """Every chatbot that has a response set or a conversation, sorted."""
        return sorted(set(self.chatbots) | {c.chatbot for c in self.conversations})

    def responses(self, chatbot: str) -> Mapping[str, str]:
        bot = self.chatbots.get(chatbot)
        return bot.responses if bot else {}

    def subset(self, conversations: Iterable[Conversation]) -> Dataset:
        """A dataset of the given conversations with the response sets of their chatbots."""
        convs = list(conversations)
        used = {c.chatbot for c in convs}
        return Dataset({k: v for k, v in self.chatbots.items() if k in used}, convs)


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (line number, field path) and what."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class DatasetError(ValueError):
    """A dataset file failed validation. ``problems`` lists every problem found, not just the first."""

    def __init__(self, path: str | os.PathLike[str], problems: list[Problem]):
        self.path = str(path)
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{self.path}: {len(problems)} problem(s)\n{shown}{more}")


# ---------------------------------------------------------------------------------------------------------------
# Validation


def _is_iso_time(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


class _Checker:
    def __init__(self, line: int):
        self.line = line
        self.problems: list[Problem] = []

    def add(self, field_path: str, message: str) -> None:
        self.problems.append(Problem(self.line, field_path, message))

    def string(self, obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(path, "is required")
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type(value).__name__}")
            return None
        if required and not value.strip():
            self.add(path, "must not be empty")
            return None
        return value

    def time(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        """An optional ISO 8601 time with a time zone."""
        value = self.string(obj, key, path, required=False)
        if value is not None and not _is_iso_time(value):
            self.add(path, f"must be an ISO 8601 time with a time zone, not {value!r}")
        return value

    def unknown_keys(self, obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(obj) - allowed):
            self.add(f"{path}{key}", "is not a field of this format")


_CONVERSATION_KEYS = {"type", "conversation_id", "chatbot", "source", "turns", "escalation_index", "outcome", "meta"}
_TURN_KEYS = {"role", "text", "at", "label", "options", "draft", "meta"}
_TOOL_TURN_KEYS = {"role", "by", "name", "request", "result", "error", "at", "meta"}
_CHATBOT_KEYS = {"type", "chatbot", "responses", "meta"}


def _parse_turn(raw: Any, path: str, check: _Checker) -> Turn | None:
    if not isinstance(raw, dict):
        check.add(path, f"must be an object, not {type(raw).__name__}")
        return None
    if raw.get("role") == "tool":
        return _parse_tool_turn(raw, path, check)
    before = len(check.problems)
    check.unknown_keys(raw, _TURN_KEYS, f"{path}.")
    role = check.string(raw, "role", f"{path}.role")
    if role is not None and role not in ROLES:
        check.add(f"{path}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
    text = check.string(raw, "text", f"{path}.text")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        check.add(f"{path}.text", f"holds {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    at = check.time(raw, "at", f"{path}.at")
    label = check.string(raw, "label", f"{path}.label", required=False)
    if label is not None and not LABEL.match(label):
        check.add(f"{path}.label", f"must be 1 to 200 characters without spaces, not {label!r}")
    if label is not None and role == "customer":
        check.add(f"{path}.label", "is for agent and bot turns only")
    options = raw.get("options")
    if options is not None:
        if not isinstance(options, list) or not all(isinstance(o, str) and o for o in options):
            check.add(f"{path}.options", "must be a list of labels (non-empty strings)")
            options = None
        elif role != "agent":
            check.add(f"{path}.options", "is for agent turns only")
    draft = check.string(raw, "draft", f"{path}.draft", required=False)
    if draft is not None and role != "agent":
        check.add(f"{path}.draft", "is for agent turns only")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        check.add(f"{path}.meta", "must be an object")
    if len(check.problems) > before:
        return None
    assert role is not None and text is not None
    return Turn(
        role=role,  # type: ignore[arg-type]
        text=text,
        at=at,
        label=label,
        options=tuple(options) if options is not None else None,
        draft=draft,
        meta=meta,
    )


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _parse_tool_turn(raw: Mapping[str, Any], path: str, check: _Checker) -> Turn | None:
    """A tool turn: ``by``, ``name``, ``request`` (object), optional ``result`` (object) and ``error`` (text)."""
    before = len(check.problems)
    check.unknown_keys(raw, _TOOL_TURN_KEYS, f"{path}.")
    by = check.string(raw, "by", f"{path}.by")
    if by is not None and by not in MAKERS:
        check.add(f"{path}.by", f"must be one of {', '.join(MAKERS)} (who made the lookup), not {by!r}")
    name = check.string(raw, "name", f"{path}.name")
    if name is not None and len(name) > MAX_TOOL_NAME_CHARS:
        check.add(f"{path}.name", f"holds {len(name)} characters; the limit is {MAX_TOOL_NAME_CHARS}")
    request = raw.get("request")
    if not isinstance(request, dict):
        check.add(f"{path}.request", "is required: an object (field -> value)" if request is None
                  else f"must be an object (field -> value), not {type(request).__name__}")
    result = raw.get("result")
    if result is not None and not isinstance(result, dict):
        check.add(f"{path}.result", f"must be an object, not {type(result).__name__}")
    error = check.string(raw, "error", f"{path}.error", required=False)
    at = check.time(raw, "at", f"{path}.at")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        check.add(f"{path}.meta", "must be an object")
    if len(check.problems) > before:
        return None
    assert name is not None and isinstance(request, dict)
    tool = ToolCall(name, request, result, error)
    size = _json_size(tool.to_json())
    if size > MAX_TOOL_EVENT_BYTES:
        check.add(path, f"the tool event holds {size} bytes of JSON; the limit is {MAX_TOOL_EVENT_BYTES}")
        return None
    return Turn(role="tool", text="", at=at, meta=meta, by=by, tool=tool)  # type: ignore[arg-type]


def _check_structure(turns: list[Turn], escalation_index: int, check: _Checker) -> None:
    """Structural rules that follow from the conversation states (PROTOCOL.md). A tool turn follows the rules of
    the party that made it."""
    if not any(t.role == "customer" for t in turns[:escalation_index]):
        check.add("escalation_index", "the bot phase must hold at least one customer turn before the escalation")
    agent_at = [i for i, t in enumerate(turns) if t.maker == "agent"]
    for i in agent_at:
        if i < escalation_index:
            what = "an agent's tool turn" if turns[i].role == "tool" else "an agent turn"
            check.add(f"turns[{i}].role", f"{what} cannot come before the escalation (escalation_index)")
    if agent_at:
        # The bot may write while the conversation waits and after a hand back, never while an agent holds it.
        for i in range(agent_at[0], agent_at[-1]):
            if turns[i].maker == "bot":
                what = "a bot's tool turn" if turns[i].role == "tool" else "a bot turn"
                check.add(f"turns[{i}].role", f"{what} cannot come between agent turns (the agent holds it)")


def parse_conversation(raw: Mapping[str, Any], line: int = 0) -> tuple[Conversation | None, list[Problem]]:
    """Validate one conversation object; returns it, or None and the problems found."""
    check = _Checker(line)
    check.unknown_keys(raw, _CONVERSATION_KEYS, "")
    conversation_id = check.string(raw, "conversation_id", "conversation_id")
    chatbot = check.string(raw, "chatbot", "chatbot")
    if chatbot is not None and not CHATBOT_ID.match(chatbot):
        check.add("chatbot", f"must match {CHATBOT_ID.pattern} (letters, digits, _ . + -), not {chatbot!r}")
    source = check.string(raw, "source", "source")
    outcome = check.string(raw, "outcome", "outcome")
    if outcome is not None and outcome not in OUTCOMES:
        check.add("outcome", f"must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    raw_turns = raw.get("turns")
    turns: list[Turn] = []
    if raw_turns is None:
        check.add("turns", "is required")
    elif not isinstance(raw_turns, list) or not raw_turns:
        check.add("turns", "must be a non-empty list")
    else:
        for i, raw_turn in enumerate(raw_turns):
            turn = _parse_turn(raw_turn, f"turns[{i}]", check)
            if turn is not None:
                turns.append(turn)
    escalation_index = raw.get("escalation_index")
    if escalation_index is None:
        check.add("escalation_index", "is required")
    elif not isinstance(escalation_index, int) or isinstance(escalation_index, bool):
        check.add("escalation_index", f"must be an integer, not {type(escalation_index).__name__}")
    elif isinstance(raw_turns, list) and not 0 < escalation_index <= len(raw_turns):
        check.add("escalation_index", f"must be between 1 and the number of turns ({len(raw_turns)})")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        check.add("meta", "must be an object")
    if not check.problems:
        assert isinstance(escalation_index, int)
        _check_structure(turns, escalation_index, check)
    if check.problems:
        return None, check.problems
    return (
        Conversation(
            conversation_id=conversation_id,  # type: ignore[arg-type]
            chatbot=chatbot,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            turns=tuple(turns),
            escalation_index=escalation_index,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            meta=meta,
        ),
        [],
    )


def parse_chatbot(raw: Mapping[str, Any], line: int = 0) -> tuple[Chatbot | None, list[Problem]]:
    """Validate one chatbot object (id and response set)."""
    check = _Checker(line)
    check.unknown_keys(raw, _CHATBOT_KEYS, "")
    chatbot = check.string(raw, "chatbot", "chatbot")
    if chatbot is not None and not CHATBOT_ID.match(chatbot):
        check.add("chatbot", f"must match {CHATBOT_ID.pattern} (letters, digits, _ . + -), not {chatbot!r}")
    responses = raw.get("responses")
    if responses is None:
        check.add("responses", "is required (an object: label -> template text; it may be empty)")
    elif not isinstance(responses, dict):
        check.add("responses", "must be an object: label -> template text")
    else:
        for label, text in responses.items():
            if not LABEL.match(label):
                check.add(f"responses.{label}", "a label is 1 to 200 characters without spaces")
            if not isinstance(text, str) or not text.strip():
                check.add(f"responses.{label}", "the template must be a non-empty string")
    meta = raw.get("meta")
    if meta is not None and not isinstance(meta, dict):
        check.add("meta", "must be an object")
    if check.problems:
        return None, check.problems
    return Chatbot(chatbot=chatbot, responses=dict(responses), meta=meta), []  # type: ignore[arg-type]


def _again(seen: dict[str, int], key: str, line: int, field_path: str, verb: str) -> Problem | None:
    """The problem of ``key`` met on an earlier line; otherwise None, and ``key`` is recorded as met on ``line``."""
    if key in seen:
        return Problem(line, field_path, f"{key!r} {verb} again (first on line {seen[key]})")
    seen[key] = line
    return None


def parse_lines(lines: Iterable[str]) -> tuple[Dataset, list[Problem]]:
    """Parse and validate JSON Lines text. Collects every problem instead of stopping at the first."""
    dataset = Dataset()
    problems: list[Problem] = []
    seen_conv: dict[str, int] = {}
    seen_bot: dict[str, int] = {}
    conv_lines: list[int] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, "", f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(raw, dict):
            problems.append(Problem(number, "", f"must be a JSON object, not {type(raw).__name__}"))
            continue
        kind = raw.get("type", "conversation")
        if kind == "chatbot":
            bot, found = parse_chatbot(raw, number)
            problems.extend(found)
            if bot is not None:
                again = _again(seen_bot, bot.chatbot, number, "chatbot", "is declared")
                if again is not None:
                    problems.append(again)
                else:
                    dataset.chatbots[bot.chatbot] = bot
        elif kind == "conversation":
            conv, found = parse_conversation(raw, number)
            problems.extend(found)
            if conv is not None:
                again = _again(seen_conv, conv.conversation_id, number, "conversation_id", "appears")
                if again is not None:
                    problems.append(again)
                else:
                    dataset.conversations.append(conv)
                    conv_lines.append(number)
        else:
            problems.append(Problem(number, "type", f"must be 'conversation' or 'chatbot', not {kind!r}"))
    # Labels must name a template of the chatbot's response set, so that recall over the set is well defined.
    for conv, number in zip(dataset.conversations, conv_lines, strict=True):
        bot = dataset.chatbots.get(conv.chatbot)
        for i, turn in enumerate(conv.turns):
            if turn.label is None:
                continue
            if bot is None:
                problems.append(Problem(number, f"turns[{i}].label", f"chatbot {conv.chatbot!r} has no response "
                                        "set in this file (add a line of type 'chatbot')"))
                break
            if turn.label not in bot.responses:
                problems.append(Problem(number, f"turns[{i}].label", f"{turn.label!r} is not in the response set "
                                        f"of chatbot {conv.chatbot!r}"))
    return dataset, problems


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read and validate a dataset file (``.jsonl`` or ``.jsonl.gz``). Raises :class:`DatasetError`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, [Problem(0, "", "file not found")])
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            dataset, problems = parse_lines(fh)
    else:
        with path.open(encoding="utf-8") as fh:
            dataset, problems = parse_lines(fh)
    if problems:
        raise DatasetError(path, problems)
    return dataset


def iter_lines(dataset: Dataset) -> Iterator[str]:
    """The dataset as JSON Lines: chatbots first (sorted), then conversations in their order."""
    for key in sorted(dataset.chatbots):
        yield json.dumps(dataset.chatbots[key].to_json(), ensure_ascii=False, sort_keys=False)
    for conv in dataset.conversations:
        yield json.dumps(conv.to_json(), ensure_ascii=False, sort_keys=False)


def save_dataset(dataset: Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``dataset`` as JSON Lines to ``path`` atomically (a reader never sees half a file)."""
    write_lines_atomic(path, iter_lines(dataset))
