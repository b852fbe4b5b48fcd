"""STAR importer: the mapping rules on synthetic dialogues (both folder layouts), on real STAR dialogues checked
by hand, the report of rejects, and the download of the pinned release (from a local stand-in for GitHub)."""

from __future__ import annotations

import gzip
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from copilot.cli import main as cli
from copilot.data.importers.star import EscalationRule, download_star, import_star
from copilot.data.records import load_dataset


def event(agent: str, action: str, text: str | None = None, t: int = 0, **extra: object) -> dict:
    out: dict = {"Agent": agent, "Action": action, "UnixTime": 1_600_000_000 + t, **extra}
    if text is not None:
        out["Text"] = text
    return out


def dialogue(did: int, tasks: list[str], events: list[dict], complete: bool = True) -> dict:
    return {
        "DialogueID": did,
        "CompletionLevel": "Complete" if complete else "EarlyDisconnectDuringDialogue",
        "Scenario": {"Domains": ["x"], "Happy": True, "MultiTask": len(tasks) > 1,
                     "WizardCapabilities": [{"Domain": "x", "Task": t} for t in tasks]},
        "Events": events,
    }


MINI = [
    dialogue(7, ["weather", "bank"], [
        event("UserGuide", "instruct", "be polite"),
        event("User", "utter", "hi there", 1),
        event("Wizard", "query", None, 1, APIName="weather", Constraints=[{"City": '"Paris"'}, {"Day": "3"}]),
        event("KnowledgeBase", "return_item", None, 1, APIName="weather", TotalItems=0),
        event("Wizard", "request_suggestions", "hello!", 2),
        event("Wizard", "pick_suggestion", "Hello, how can I help?", 3, ActionLabel="hello",
              ActionLabelOptions=["hello", "bye"]),
        event("User", "utter", "what's the weather in Paris?", 4),
        event("Wizard", "query", None, 5, APIName="weather", Constraints=[]),
        event("KnowledgeBase", "return_item", None, 6, Item={"APIName": "weather", "Temp": 20}, TotalItems=-1),
        event("Wizard", "request_suggestions", "its sunny", 7),
        event("Wizard", "request_suggestions", "It is sunny and 20 degrees", 8),
        event("Wizard", "pick_suggestion", "It is sunny in Paris.", 9, ActionLabel="weather_inform",
              ActionLabelOptions=["weather_inform", "ask_location"]),
        event("User", "utter", "and my balance?", 10),
        event("Wizard", "utter", "Let me check that for you.", 11),
        event("Wizard", "pick_suggestion", "Balance noted", 12, ActionLabel="custom", ActionLabelOptions=["custom"]),
        event("Wizard", "pick_suggestion", "Goodbye!", 13, ActionLabel="goodbye_1",
              ActionLabelOptions=["goodbye_1"]),
        event("User", "complete", None, 14),
    ]),
    dialogue(8, ["weather"], [event("UserGuide", "instruct", "say nothing")]),
    dialogue(9, ["weather"], [
        event("User", "utter", "hello", 1),
        event("Wizard", "pick_suggestion", "Hello, how can I help?", 2, ActionLabel="hello",
              ActionLabelOptions=["hello"]),
    ], complete=False),
]
TASKS = {
    "weather": {"hello": "Hello, how can I help?", "weather_inform": "It is {weather} in {city}.",
                "ask_location": "Where?"},
    "bank": {"hello": "Hi, bank here.", "bank_ask_pin": "Your PIN?"},
    "trivia": {"goodbye_1": "Goodbye!"},
}


def write_tasks(root: Path) -> None:
    for task, responses in TASKS.items():
        (root / "tasks" / task).mkdir(parents=True)
        (root / "tasks" / task / "responses.json").write_text(json.dumps(responses))


@pytest.fixture(params=["packed", "original"])
def mini_star(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = tmp_path / "star"
    write_tasks(root)
    if request.param == "packed":
        with gzip.open(root / "dialogues.jsonl.gz", "wt") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in MINI)
    else:
        (root / "dialogues").mkdir()
        for d in MINI:
            (root / "dialogues" / f"{d['DialogueID']}.json").write_text(json.dumps(d))
    return root


def test_mapping_rules_on_synthetic_dialogues(mini_star: Path) -> None:
    dataset, report = import_star(mini_star, progress=False)
    assert report.read == 3 and report.imported == 1
    assert dict(report.rejected) == {"no_turns": 1, "fewer_than_2_customer_messages": 1}
    conv = dataset.conversations[0]
    assert conv.conversation_id == "star-7" and conv.chatbot == "bank+weather" and conv.outcome == "resolved"
    roles = [t.role for t in conv.turns]
    assert roles == ["customer", "tool", "bot", "customer", "tool", "agent", "customer", "agent", "agent", "agent"]
    assert conv.escalation_index == 4
    # a lookup before the escalation is the bot's; one after it the agent's; the answer is the result
    early, late = conv.turns[1], conv.turns[4]
    assert early.by == "bot" and early.tool.request == {"City": "Paris", "Day": 3}
    assert early.tool.result == {"items": [], "total": 0}
    assert late.by == "agent" and late.tool.name == "weather" and late.tool.request == {}
    assert late.tool.result == {"items": [{"Temp": 20}]} and late.at == "2020-09-13T12:26:45Z"
    assert report.tool_turns == 2 and report.with_tool_turns == 1
    hello, inform, _, typed, custom, bye = conv.turns[2], conv.turns[5], *conv.turns[6:]
    assert hello.label == "hello" and hello.options is None and hello.draft is None  # a bot turn: no screen
    assert inform.label == "weather_inform" and inform.options == ("weather_inform", "ask_location")
    assert inform.draft == "It is sunny and 20 degrees"  # the latest request_suggestions before the pick
    assert typed.label is None and typed.draft is None and typed.text == "Let me check that for you."
    assert custom.label is None and custom.text == "Balance noted"  # 'custom' is typed text, not a template
    assert bye.label == "goodbye_1"
    assert conv.turns[0].at == "2020-09-13T12:26:41Z"
    bot = dataset.chatbots["bank+weather"]
    # union of the tasks' response sets, first (sorted) task wins on a shared label
    assert bot.responses["hello"] == "Hi, bank here." and bot.responses["bank_ask_pin"] == "Your PIN?"
    # a label the screen offered that neither task defines comes from the task that defines it
    assert bot.responses["goodbye_1"] == "Goodbye!"
    assert bot.meta["added_labels"] == {"goodbye_1": "responses.json of trivia"}
    # offered on a screen but never defined nor picked: no template to show, so it is listed, not invented
    assert bot.meta["offered_without_template"] == ["bye"] and "bye" not in bot.responses


def test_escalation_rule_is_configurable(mini_star: Path) -> None:
    dataset, report = import_star(mini_star, EscalationRule(after_customer_turns=1), progress=False)
    assert report.imported == 2
    first = {c.conversation_id: c for c in dataset.conversations}["star-7"]
    assert first.escalation_index == 1 and first.turns[2].role == "agent"
    assert first.turns[1].role == "tool" and first.turns[1].by == "agent"
    abandoned = {c.conversation_id: c for c in dataset.conversations}["star-9"]
    assert abandoned.outcome == "abandoned"


def test_cli_writes_a_valid_file_and_reports(mini_star: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jsonl"
    assert cli(["import", "star", "--source", str(mini_star), "--out", str(out), "--quiet",
                "--report", str(tmp_path / "r.json")]) == 0
    assert len(load_dataset(out).conversations) == 1
    printed = capsys.readouterr().out
    assert "no_turns: 1 (e.g. 8)" in printed and "fewer_than_2_customer_messages: 1 (e.g. 9)" in printed
    assert json.loads((tmp_path / "r.json").read_text())["rejected"] == {
        "fewer_than_2_customer_messages": 1, "no_turns": 1}


def test_missing_source_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("COPILOT_STAR_DIR", raising=False)
    assert cli(["import", "star", "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 2
    assert "pass --source DIR or set COPILOT_STAR_DIR" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.fixture
def fake_github(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server standing in for GitHub's archive download (the machine has no internet)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for d in MINI:
            archive.writestr(f"STAR-abc/dialogues/{d['DialogueID']}.json", json.dumps(d))
        for task, responses in TASKS.items():
            archive.writestr(f"STAR-abc/tasks/{task}/responses.json", json.dumps(responses))
        archive.writestr("STAR-abc/README.md", "STAR")
    payload = buf.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/archive.zip"
    server.shutdown()
    server.server_close()


def test_download_from_a_local_stand_in_for_github(fake_github: str, tmp_path: Path) -> None:
    dest = download_star(tmp_path / "downloads" / "star", url=fake_github)
    assert (dest / "dialogues" / "7.json").exists() and (dest / "tasks" / "weather" / "responses.json").exists()
    dataset, report = import_star(dest, progress=False)
    assert report.imported == 1 and dataset.conversations[0].conversation_id == "star-7"


# ---- the real data, read where it lies -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def star(star_dir: Path):
    return import_star(star_dir, progress=False)


def test_every_real_dialogue_is_imported_or_reported(star) -> None:
    dataset, report = star
    assert report.read == report.imported + sum(report.rejected.values())
    assert report.imported == len(dataset.conversations) > 4000
    assert len(dataset.chatbots) == 36
    for conv in dataset.conversations:  # every label names a template of its chatbot
        responses = dataset.chatbots[conv.chatbot].responses
        assert all(t.label in responses for t in conv.turns if t.label)


def test_real_dialogue_1_checked_by_hand(star) -> None:
    """STAR dialogue 1 (doctor_followup), read event by event from the raw file."""
    dataset, _ = star
    conv = {c.conversation_id: c for c in dataset.conversations}["star-1"]
    assert conv.chatbot == "doctor_followup" and conv.outcome == "resolved"
    assert [t.role for t in conv.turns] == ["customer", "bot", "customer", "tool", "agent", "customer", "agent",
                                            "customer", "agent"]
    assert conv.escalation_index == 3  # after the customer's second message
    assert conv.turns[1].text == "Could I get your name, please?" and conv.turns[1].label == "ask_name"
    # the wizard's query and the knowledge base's answer, one tool turn made by the agent
    lookup = conv.turns[3]
    assert lookup.by == "agent" and lookup.at == "2020-05-13T13:15:55Z"
    assert lookup.tool is not None and lookup.tool.name == "doctor_followup"
    assert lookup.tool.request == {"Name": 'api.is_equal_to("Dr. Johnson")', "PatientName": "Alexis"}
    assert lookup.tool.result == {"items": [{"Message": "Take your medicine before you go to sleep. If you "
                                             "experience nausea, please contact your doctor immediately."}]}
    assert lookup.tool.error is None
    inform = conv.turns[4]
    assert inform.label == "doctor_inform_doctors_instructions"
    assert inform.options == ("doctor_inform_doctors_instructions", "doctor_inform_nothing_found")
    # two request_suggestions preceded the pick; the draft is the later one
    assert inform.draft == "Dr. Johnson says to take medicine before sleep. If nausea happens, call him immediately."
    assert conv.turns[6].label is None and conv.turns[6].text.startswith("Yes. It must be before bed")
    assert conv.turns[8].label == "goodbye_1" and conv.turns[8].draft == "Ok. Goodbye."
    # goodbye_1 is not in doctor_followup's responses.json; the screen offered it, so the set gained it
    assert dataset.chatbots["doctor_followup"].responses["goodbye_1"] == "Thank you and goodbye."


def test_real_dialogue_2_keeps_every_lookup_in_order(star) -> None:
    """STAR dialogue 2 (spaceship_access_codes): four queries, the last with another code type, read by hand."""
    dataset, _ = star
    conv = {c.conversation_id: c for c in dataset.conversations}["star-2"]
    lookups = [t for t in conv.turns if t.role == "tool"]
    assert len(lookups) == 4 and all(t.by == "agent" and t.tool.name == "spaceship_access_codes" for t in lookups)
    # the first query gave Code twice; the rest once
    assert lookups[0].tool.request == {"UserName": "Han", "UserRank": "Chief Engineer", "Code": 639431,
                                       "CodeType": "Access Code"}
    refused = "Sorry, you are not authorized to unlock the door. Please obtain a clearance code from the Captain."
    assert [t.tool.result for t in lookups[:3]] == [{"items": [{"Message": refused}]}] * 3
    assert lookups[3].tool.request["CodeType"] == "Clearance"
    assert lookups[3].tool.result == {"items": [{"Message": "The door is now unlocked."}]}
    # each answer is followed by the wizard telling the customer: the lookup sits right before that reply
    after = conv.turns[conv.turns.index(lookups[3]) + 1]
    assert after.role == "agent" and after.label == "spaceship_inform_outcome"


def test_real_lookup_that_found_nothing(star) -> None:
    """STAR dialogue 6 (party_plan): the knowledge base returned no item (TotalItems 0)."""
    dataset, report = star
    conv = {c.conversation_id: c for c in dataset.conversations}["star-6"]
    empty = [t for t in conv.turns if t.role == "tool" and t.tool.result == {"items": [], "total": 0}]
    assert empty and empty[0].tool.name == "party_plan"
    assert empty[0].tool.request["Name"] == "West Bay Venue" and empty[0].tool.request["NumberGuests"] == 31
    assert report.tool_turns == sum(1 for c in dataset.conversations for t in c.turns if t.role == "tool") > 0


def test_real_multi_task_chatbot_id(star) -> None:
    dataset, _ = star
    assert "bank_balance+bank_fraud_report+restaurant_book+trivia" in dataset.chatbots
    bot = dataset.chatbots["bank_balance+restaurant_book+weather"]
    assert bot.meta["tasks"] == ["bank_balance", "restaurant_book", "weather"]
    assert {"bank_ask_pin", "restaurant_ask_restaurant", "weather_ask_location"} <= set(bot.responses)
