"""Import STAR (Mosig, Mehri, Kober 2020; MIT) into the recorded-conversation format.

STAR is a Wizard-of-Oz corpus: a crowd worker (the wizard) answered a user by picking reply suggestions from a
schema-guided response set, or by typing freely. We read it as bot-to-human handoffs:

* The chatbot is the dialogue's set of WizardCapabilities tasks, sorted and joined with ``+``
  (``bank_balance+restaurant_book+weather``). Its response set is the union of those tasks' ``responses.json``
  (first definition wins where two tasks share a label), plus every label the wizard screen of that chatbot offered
  or the wizard picked that those files lack: taken from another task's ``responses.json`` where one defines it,
  otherwise from the text wizards most often sent with it. These additions are listed in the chatbot's ``meta``.
* User ``utter`` -> customer turn. Wizard ``pick_suggestion`` -> agent turn with ``label``, ``options``
  (ActionLabelOptions) and ``draft`` (the Text of the latest ``request_suggestions`` before it); a pick labelled
  ``custom`` is the wizard's own typed text and becomes a free-text agent turn. Wizard ``utter`` -> free-text agent
  turn. A wizard ``query`` and the KnowledgeBase ``return_item`` that answers it become one tool turn made by the
  agent (:func:`tool_turn`: the API name, the constraints as the request, the returned item or none as the
  result). UserGuide instructions, task selection and ``complete`` are not turns.
* Escalation rule (:class:`EscalationRule`): the bot answers until the customer's N-th message (default 2), then
  escalates; wizard turns before that point become ``bot`` turns (label kept, screen annotations dropped), and
  the lookups before it are the bot's.
* Outcome: ``resolved`` when CompletionLevel is Complete, ``abandoned`` otherwise. STAR has no hand-backs.

Dialogues that cannot be imported are counted by reason in :class:`ImportReport`, never dropped silently.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from copilot.data.records import Chatbot, Dataset, parse_conversation
from copilot.live.protocol import MAX_TEXT_CHARS

# The pinned public release (SOURCE.md): only downloaded when a user asks for it explicitly.
STAR_COMMIT = "3058975092cdd09798e4a3a9e4ae135755824545"
STAR_ARCHIVE_URL = f"https://github.com/RasaHQ/STAR/archive/{STAR_COMMIT}.zip"

FREE_TEXT_LABEL = "custom"  # STAR's label for a wizard reply typed on the suggestion screen


@dataclass(frozen=True)
class EscalationRule:
    """Where the bot hands over: after the customer's ``after_customer_turns``-th message."""

    after_customer_turns: int = 2

    def escalation_index(self, roles: list[str]) -> int | None:
        """Index of the first turn after the escalation, or None when the customer never wrote enough."""
        if self.after_customer_turns < 1:
            raise ValueError("after_customer_turns must be at least 1")
        seen = 0
        for i, role in enumerate(roles):
            if role == "customer":
                seen += 1
                if seen == self.after_customer_turns:
                    return i + 1
        return None


@dataclass
class ImportReport:
    """What an import did: counts of dialogues read, imported and rejected (by reason), and the chatbots."""

    read: int = 0
    imported: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_examples: dict[str, list[str]] = field(default_factory=dict)
    skipped_empty_turns: int = 0
    chatbots: int = 0
    added_labels: int = 0
    tool_turns: int = 0
    with_tool_turns: int = 0

    def reject(self, reason: str, dialogue_id: str) -> None:
        self.rejected[reason] += 1
        self.rejected_examples.setdefault(reason, [])
        if len(self.rejected_examples[reason]) < 5:
            self.rejected_examples[reason].append(dialogue_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "imported": self.imported,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_examples": self.rejected_examples,
            "skipped_empty_turns": self.skipped_empty_turns,
            "chatbots": self.chatbots,
            "added_labels": self.added_labels,
            "tool_turns": self.tool_turns,
            "conversations_with_tool_turns": self.with_tool_turns,
        }

    def lines(self) -> list[str]:
        out = [
            f"dialogues read:      {self.read}",
            f"imported:            {self.imported}",
            f"rejected:            {sum(self.rejected.values())}",
        ]
        out += [f"  {reason}: {n} (e.g. {', '.join(self.rejected_examples[reason])})"
                for reason, n in sorted(self.rejected.items())]
        out += [
            f"empty turns skipped: {self.skipped_empty_turns}",
            f"chatbots:            {self.chatbots}",
            f"labels added to response sets from other tasks or observed picks: {self.added_labels}",
            f"tool turns kept:     {self.tool_turns} (knowledge-base lookups, in {self.with_tool_turns} of "
            f"{self.imported} conversations: {self.with_tool_turns / max(self.imported, 1):.0%})",
        ]
        return out


def resolve_star_dir(source: str | os.PathLike[str] | None) -> Path:
    """The STAR folder ``source`` (the caller's ``--source`` or ``Settings.star_dir``), checked; raises with a clear
    message when there is none."""
    if not source:
        raise FileNotFoundError(
            "no STAR folder given: pass --source DIR or set COPILOT_STAR_DIR "
            "(or fetch the public release once with `copilot import star --download DIR`)"
        )
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"STAR folder not found: {path}")
    return path


def iter_raw_dialogues(star_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield raw STAR dialogues from the packed ``dialogues.jsonl.gz`` or from ``dialogues/<id>.json``."""
    packed = star_dir / "dialogues.jsonl.gz"
    folder = star_dir / "dialogues"
    if packed.exists():
        with gzip.open(packed, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    elif folder.is_dir():
        files = sorted(folder.glob("*.json"), key=lambda p: (len(p.stem), p.stem))
        for path in files:
            with path.open(encoding="utf-8") as fh:
                yield json.load(fh)
    else:
        raise FileNotFoundError(f"{star_dir} holds neither dialogues.jsonl.gz nor a dialogues/ folder")


def load_task_responses(star_dir: Path) -> dict[str, dict[str, str]]:
    """``tasks/<task>/responses.json`` of every task: task -> label -> template."""
    tasks_dir = star_dir / "tasks"
    if not tasks_dir.is_dir():
        raise FileNotFoundError(f"{star_dir} has no tasks/ folder (tasks/<task>/responses.json)")
    out: dict[str, dict[str, str]] = {}
    for path in sorted(tasks_dir.glob("*/responses.json")):
        with path.open(encoding="utf-8") as fh:
            out[path.parent.name] = json.load(fh)
    return out


def chatbot_id(dialogue: dict[str, Any]) -> str:
    tasks = sorted({cap["Task"] for cap in dialogue["Scenario"]["WizardCapabilities"]})
    return "+".join(tasks)


def _iso(unix_time: Any) -> str | None:
    if not isinstance(unix_time, int | float):
        return None
    return datetime.fromtimestamp(unix_time, UTC).isoformat().replace("+00:00", "Z")


def _constraint_value(raw: Any) -> Any:
    """A query constraint's value: STAR writes most as JSON (``"\"Alexis\""``, ``639431``), some as an expression
    (``api.is_equal_to("Dr. Johnson")``), which is kept as written."""
    if not isinstance(raw, str):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str | int | float | bool) else raw


def tool_turn(query: dict[str, Any], answer: dict[str, Any] | None) -> dict[str, Any]:
    """A wizard ``query`` and the KnowledgeBase ``return_item`` after it as one tool turn (made by the agent).

    request: the constraints, field -> value (a field given twice keeps its last value). result: ``{"items":
    [the returned item without its APIName]}``, with ``"total"`` when the knowledge base counted the matches
    (STAR's TotalItems; -1 means a single answer such as ``{"Message": "Unavailable"}``); ``{"items": [],
    "total": 0}`` when nothing matched. A query with no answer has no result.
    """
    request: dict[str, Any] = {}
    for constraint in query.get("Constraints") or []:
        if isinstance(constraint, dict):
            for key, value in constraint.items():
                request[str(key)] = _constraint_value(value)
    turn: dict[str, Any] = {"role": "tool", "by": "agent", "name": str(query.get("APIName") or "query"),
                            "request": request}
    if answer is not None:
        item, total = answer.get("Item"), answer.get("TotalItems")
        if isinstance(item, dict):
            result: dict[str, Any] = {"items": [{k: v for k, v in item.items() if k != "APIName"}]}
            if isinstance(total, int) and total >= 0:
                result["total"] = total
        else:
            result = {"items": [], "total": 0}
        turn["result"] = result
    at = _iso(query.get("UnixTime"))
    if at is not None:
        turn["at"] = at
    return turn


def _raw_turns(dialogue: dict[str, Any], report: ImportReport) -> list[dict[str, Any]]:
    """The conversation's turns before the escalation rule is applied (wizard turns still 'agent')."""
    turns: list[dict[str, Any]] = []
    draft: str | None = None
    events = dialogue.get("Events", [])
    for i, event in enumerate(events):
        turn: dict[str, Any]
        agent, action = event.get("Agent"), event.get("Action")
        text = event.get("Text")
        if agent == "Wizard" and action == "query":
            following = events[i + 1] if i + 1 < len(events) else {}
            answered = following.get("Agent") == "KnowledgeBase" and following.get("Action") == "return_item"
            turns.append(tool_turn(event, following if answered else None))
            continue
        if agent == "User" and action == "utter":
            role, turn = "customer", {}
        elif agent == "Wizard" and action == "request_suggestions":
            draft = text if isinstance(text, str) and text.strip() else None
            continue
        elif agent == "Wizard" and action == "pick_suggestion":
            role = "agent"
            label = event.get("ActionLabel")
            turn = {"options": [o for o in event.get("ActionLabelOptions") or [] if isinstance(o, str) and o]}
            if isinstance(label, str) and label and label != FREE_TEXT_LABEL:
                turn["label"] = label
            if draft is not None:
                turn["draft"] = draft
            draft = None
        elif agent == "Wizard" and action == "utter":
            role, turn, draft = "agent", {}, None
        else:
            continue  # UserGuide, KnowledgeBase answers (kept with their query), select_task, complete, ...
        if not isinstance(text, str) or not text.strip():
            report.skipped_empty_turns += 1
            continue
        turn.update(role=role, text=text.strip())
        at = _iso(event.get("UnixTime"))
        if at is not None:
            turn["at"] = at
        turns.append(turn)
    return turns


def _observed_templates(dialogues: list[dict[str, Any]]) -> dict[str, str]:
    """For each picked label, the text wizards most often sent with it (ties broken by the text)."""
    texts: dict[str, Counter[str]] = defaultdict(Counter)
    for d in dialogues:
        for e in d.get("Events", []):
            label, text = e.get("ActionLabel"), e.get("Text")
            if e.get("Action") == "pick_suggestion" and isinstance(label, str) and isinstance(text, str) \
                    and text.strip():
                texts[label][text.strip()] += 1
    return {label: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for label, c in texts.items()}


def build_response_sets(
    dialogues: list[dict[str, Any]], task_responses: dict[str, dict[str, str]]
) -> dict[str, Chatbot]:
    """Every chatbot's response set (see the module docstring for the rule)."""
    global_union: dict[str, tuple[str, str]] = {}
    for task in sorted(task_responses):
        for label, text in task_responses[task].items():
            global_union.setdefault(label, (task, text))
    observed = _observed_templates(dialogues)
    screen_labels: dict[str, set[str]] = defaultdict(set)
    tasks_of: dict[str, list[str]] = {}
    for d in dialogues:
        bot = chatbot_id(d)
        tasks_of[bot] = bot.split("+")
        for e in d.get("Events", []):
            if e.get("Action") == "pick_suggestion":
                screen_labels[bot].update(o for o in e.get("ActionLabelOptions") or [] if isinstance(o, str))
                if isinstance(e.get("ActionLabel"), str):
                    screen_labels[bot].add(e["ActionLabel"])
    chatbots: dict[str, Chatbot] = {}
    for bot, tasks in sorted(tasks_of.items()):
        responses: dict[str, str] = {}
        for task in tasks:
            for label, text in task_responses.get(task, {}).items():
                responses.setdefault(label, text)
        added: dict[str, str] = {}
        unknown: list[str] = []
        for label in sorted(screen_labels[bot] - set(responses) - {FREE_TEXT_LABEL}):
            if label in global_union:
                responses[label] = global_union[label][1]
                added[label] = f"responses.json of {global_union[label][0]}"
            elif label in observed:
                responses[label] = observed[label]
                added[label] = "most frequent text picked with this label"
            else:
                unknown.append(label)
        meta: dict[str, Any] = {"tasks": tasks, "source": "star"}
        if added:
            meta["added_labels"] = added
        if unknown:
            meta["offered_without_template"] = unknown
        chatbots[bot] = Chatbot(chatbot=bot, responses=responses, meta=meta)
    return chatbots


def convert_dialogue(
    dialogue: dict[str, Any], rule: EscalationRule, report: ImportReport
) -> tuple[dict[str, Any] | None, str | None]:
    """One raw dialogue as a conversation object, or None and the reason it cannot be imported."""
    turns = _raw_turns(dialogue, report)
    if not turns:
        return None, "no_turns"
    if any(len(t.get("text", "")) > MAX_TEXT_CHARS for t in turns):
        return None, "text_too_long"
    index = rule.escalation_index([t["role"] for t in turns])
    if index is None:
        return None, f"fewer_than_{rule.after_customer_turns}_customer_messages"
    for turn in turns[:index]:
        if turn["role"] == "agent":
            turn["role"] = "bot"
            turn.pop("options", None)
            turn.pop("draft", None)
        elif turn["role"] == "tool":
            turn["by"] = "bot"
    scenario = dialogue.get("Scenario", {})
    return {
        "type": "conversation",
        "conversation_id": f"star-{dialogue['DialogueID']}",
        "chatbot": chatbot_id(dialogue),
        "source": "star",
        "escalation_index": index,
        "outcome": "resolved" if dialogue.get("CompletionLevel") == "Complete" else "abandoned",
        "turns": turns,
        "meta": {
            "star": {
                "dialogue_id": dialogue["DialogueID"],
                "completion_level": dialogue.get("CompletionLevel"),
                "happy": scenario.get("Happy"),
                "multi_task": scenario.get("MultiTask"),
                "domains": scenario.get("Domains"),
            },
            "escalation_rule": {"after_customer_turns": rule.after_customer_turns},
        },
    }, None


def import_star(
    source: str | os.PathLike[str] | None = None,
    rule: EscalationRule | None = None,
    *,
    progress: bool = True,
) -> tuple[Dataset, ImportReport]:
    """Read a STAR folder into a validated :class:`Dataset` and a report of what was rejected and why."""
    star_dir = resolve_star_dir(source)
    rule = rule or EscalationRule()
    report = ImportReport()
    task_responses = load_task_responses(star_dir)
    dialogues: list[dict[str, Any]] = []
    for raw in tqdm(iter_raw_dialogues(star_dir), desc="read STAR", unit="dlg", disable=not progress):
        report.read += 1
        if not isinstance(raw, dict) or "DialogueID" not in raw or "Scenario" not in raw:
            report.reject("malformed_dialogue", str(raw.get("DialogueID", "?")) if isinstance(raw, dict) else "?")
            continue
        if not raw["Scenario"].get("WizardCapabilities"):
            report.reject("no_wizard_capabilities", str(raw["DialogueID"]))
            continue
        dialogues.append(raw)
    chatbots = build_response_sets(dialogues, task_responses)
    dataset = Dataset(chatbots=chatbots)
    for raw in dialogues:
        obj, reason = convert_dialogue(raw, rule, report)
        if obj is None:
            report.reject(reason or "unknown", str(raw["DialogueID"]))
            continue
        conv, _ = parse_conversation(obj)
        if conv is None:
            report.reject("invalid_after_mapping", str(raw["DialogueID"]))
            continue
        missing = [t.label for t in conv.turns if t.label and t.label not in chatbots[conv.chatbot].responses]
        if missing:
            report.reject("label_without_template", str(raw["DialogueID"]))
            continue
        dataset.conversations.append(conv)
    used = {c.chatbot for c in dataset.conversations}
    dataset.chatbots = {k: v for k, v in chatbots.items() if k in used}
    report.imported = len(dataset.conversations)
    tools = [sum(1 for t in c.turns if t.role == "tool") for c in dataset.conversations]
    report.tool_turns, report.with_tool_turns = sum(tools), sum(1 for n in tools if n)
    report.chatbots = len(dataset.chatbots)
    report.added_labels = sum(len((b.meta or {}).get("added_labels", {})) for b in dataset.chatbots.values())
    return dataset, report


def download_star(dest: str | os.PathLike[str], url: str = STAR_ARCHIVE_URL, *, timeout: float = 60.0) -> Path:
    """Download the pinned STAR release into ``dest`` (``dest/dialogues/*.json``, ``dest/tasks/...``).

    Only called when a user asks for it (``copilot import star --download DIR``); nothing else in the
    project ever reaches the network for data.
    """
    dest = Path(dest)
    if (dest / "dialogues").is_dir() and (dest / "tasks").is_dir():
        return dest
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
        tmp = Path(tempfile.mkdtemp(prefix=".star-", dir=dest.parent if dest.parent.exists() else None))
        try:
            for name in names:
                rel = name[len(root):] if name.startswith(root) else name
                if not rel or not (rel.startswith(("dialogues/", "tasks/")) or rel in ("LICENSE", "README.md")):
                    continue
                target = (tmp / rel).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise ValueError(f"unsafe path in the STAR archive: {name!r}")
                if name.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return dest
