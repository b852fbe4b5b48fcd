"""Replay and champions end to end: a real ``handoff serve`` subprocess, real Socket.IO clients, a real MLflow
SQLite registry (the session's ``mlflow_uri``).

- A replay through a server whose champions were exported from one fitted strategy completes every conversation,
  records one suggestions row per agent turn, and its summary equals the offline evaluation of that strategy on the
  same conversations exactly (latency aside: the replay measures the wire, offline the call), the agent turns right
  after a lookup included; every recorded tool turn was posted, and no customer received one.
- A replayed conversation with tool turns is stored as recorded (each lookup by the party that made it), and the
  context of each agent turn, built from the stored events up to the seq its suggestions were for, is the offline
  context of that turn, which is also what the server's provider was given.
- Moving the ``champion`` alias while the server runs changes the suggestions of the next customer message.
- Export and load round trip; a chatbot without a champion gets no suggestions and its chat still works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest
from handoff_testing import ADMIN_KEY, ContextEchoTestProvider, parts, server_starter

from copilot.data.context import Context, ContextTurn, context_from_events, contexts_for
from copilot.data.records import Conversation, Dataset, load_dataset
from copilot.live.client import Connection, HandoffHttp
from copilot.live.protocol import EV_CLAIM, EV_ESCALATE, EV_MESSAGE, EV_SUGGESTIONS, EV_TOOL_EVENT
from copilot.live.replay import replay, select, start_server
from copilot.live.replayer import ReplayConfig, Replayer
from copilot.serving.export import (
    CHAMPION_ALIAS,
    export_champion,
    load_model_version,
    model_name,
    predict_suggestions,
    resolve_alias,
)
from copilot.strategies import make_strategy

LATENCY = ("latency_p50", "latency_p95")


def _renamed(data: Dataset, suffix: str) -> Dataset:
    """The same conversations under chatbot ids of their own, so tests sharing one registry never collide."""
    chatbots = {f"{k}-{suffix}": dataclasses.replace(v, chatbot=f"{k}-{suffix}") for k, v in data.chatbots.items()}
    convs = [dataclasses.replace(c, chatbot=f"{c.chatbot}-{suffix}") for c in data.conversations]
    return Dataset(chatbots, convs)


def _without_latency(summary: dict[str, Any]) -> dict[str, Any]:
    def clean(scores: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in scores.items() if not k.startswith(LATENCY)}
    return {"overall": {s: clean(v) for s, v in summary["overall"].items()},
            "per_chatbot": {b: {s: clean(v) for s, v in by.items()} for b, by in summary["per_chatbot"].items()}}


def _after_a_lookup(data: Dataset) -> set[tuple[str, int]]:
    """(conversation id, turn index) of every agent turn that directly follows a tool turn."""
    return {(c.conversation_id, i) for c in data.conversations for i in c.agent_turn_indices()
            if c.turns[i - 1].role == "tool"}


def _replay_matches_offline(train: Dataset, test: Dataset, mlflow_uri: str, strategy: Any = None) -> Any:
    """Replays ``test`` through champions of ``strategy`` (default tfidf) fitted on ``train``; returns the turns."""
    from copilot.evaluation.metrics import summarize
    from copilot.evaluation.runs import predict

    strategy = (strategy or make_strategy("tfidf")).fit(train)
    for chatbot in test.chatbot_ids():
        export_champion(strategy, chatbot, mlflow_uri)
    sid = strategy.describe()
    server = start_server(tracking_uri=mlflow_uri, suggestions_k=5)
    try:
        result = asyncio.run(replay(test, server.url, server.admin_key,
                                    ReplayConfig(concurrency=8, agents=3, strategy_id=sid), progress=False))
    finally:
        assert server.stop() == 0
    report, turns = result.handoff, result.turns
    assert report["errors"] == []
    assert report["completed"] == report["conversations"] == len(test.conversations)
    agent_turns = sum(len(c.agent_turn_indices()) for c in test.conversations)
    assert len(turns) == agent_turns == report["suggestions_received"]
    assert turns["suggestions_received"].all()
    assert not turns.duplicated(["conversation_id", "turn_index"]).any()
    # Every claim race had one winner; the other agents were told it was claimed.
    assert report["claim_races"]["races"] == len(test.conversations)
    assert set(report["claim_races"]["loser_codes"]) <= {"already_claimed"}
    # Every recorded lookup was posted; the customers' connections never received one.
    tool_turns = sum(t.role == "tool" for c in test.conversations for t in c.turns)
    assert report["tool_events"] == {"posted": tool_turns, "seen_by_customers": 0}

    offline = predict(strategy, test, k=5)
    merged = turns.merge(offline, on=["conversation_id", "turn_index"], suffixes=("", "_offline"))
    assert len(merged) == len(offline) == len(turns)
    assert (merged["suggested_texts"].map(list) == merged["suggested_texts_offline"].map(list)).all()
    assert (merged["suggested_labels"].map(list) == merged["suggested_labels_offline"].map(list)).all()
    # The turns right after a lookup were served for the lookup's seq, and as offline.
    lookups = _after_a_lookup(test)
    after = merged[[key in lookups for key in zip(merged["conversation_id"], merged["turn_index"], strict=True)]]
    assert len(after) == len(lookups) > 0
    assert (after["suggested_texts"].map(list) == after["suggested_texts_offline"].map(list)).all()
    replay_columns = turns[offline.columns.tolist()]
    assert _without_latency(summarize(replay_columns)) == _without_latency(summarize(offline))
    return merged


@pytest.mark.slow
@pytest.mark.star
def test_star_replay_through_champions_equals_offline_evaluation(star_splits: dict[str, Dataset],
                                                                  mlflow_uri: str) -> None:
    train = star_splits["train"]
    test = select(star_splits["test"], limit=200)
    _replay_matches_offline(train, test, mlflow_uri)


@pytest.mark.slow
def test_sample_replay_through_champions_equals_offline_evaluation(sample_path: Path, mlflow_uri: str) -> None:
    data = _renamed(load_dataset(sample_path), f"s{uuid.uuid4().hex[:6]}")
    assert {t.maker for c in data.conversations for t in c.turns if t.role == "tool"} == {"bot", "agent"}
    _replay_matches_offline(data, data, mlflow_uri)


@pytest.mark.slow
def test_a_champion_whose_threshold_hides_suggestions_replays_as_offline(sample_path: Path, mlflow_uri: str) -> None:
    """A trigger threshold on one chatbot: the turns it hides get an empty suggestions event, as offline."""
    data = _renamed(load_dataset(sample_path), f"t{uuid.uuid4().hex[:6]}")
    unsure = sorted(data.chatbot_ids())[0]
    strategy = make_strategy("adapted", {"base": {"strategy": "tfidf", "params": {}},
                                         "per_chatbot": {unsure: {"threshold": 0.6}}})
    merged = _replay_matches_offline(data, data, mlflow_uri, strategy)
    hidden = merged[merged["suggested_texts"].map(len) == 0]
    assert len(hidden) > 0 and set(hidden["chatbot"]) == {unsure}
    assert (merged[merged["chatbot"] == unsure]["suggested_texts"].map(len) > 0).any()  # shown when sure


def _tool_turns(conv: Conversation) -> list[tuple[Any, ...]]:
    return [(f"t{i}", t.by, t.tool.name, t.tool.request, t.tool.result, t.tool.error)
            for i, t in enumerate(conv.turns) if t.tool is not None]


async def test_a_replay_stores_the_lookups_as_recorded_and_the_server_sees_the_offline_contexts(
        sample_path: Path, tmp_path: Path) -> None:
    data = load_dataset(sample_path)
    # Per chatbot, conversations with the bot's and the agent's lookups (before the escalation, after a hand back).
    picked = [c for c in data.conversations if {t.maker for t in c.turns if t.tool} == {"agent", "bot"}]
    subset = data.subset(picked)
    assert set(subset.chatbot_ids()) == set(data.chatbot_ids())
    provider = ContextEchoTestProvider()
    async with server_starter(f"sqlite:///{tmp_path / 'handoff.db'}") as start, aiohttp.ClientSession() as session:
        # An agent replays many conversations on one connection: rate limits raised as for `copilot replay`.
        server = await start(provider=provider, rate_limit_per_s=1000.0, rate_limit_burst=2000)
        replayer = Replayer(server.url, ADMIN_KEY, ReplayConfig(concurrency=4, agents=2))
        try:
            await replayer.setup(HandoffHttp(server.url, session), subset.chatbot_ids())
            results = await replayer.replay_all(subset.conversations, progress=False)
        finally:
            await replayer.close()
        for conv, result in zip(subset.conversations, results, strict=True):
            assert result.completed, result.error
            assert result.server_id is not None
            async with parts(server).store.read() as tx:
                stored = await tx.events.after(result.server_id, 0)
            lookups = [e for e in stored if e["kind"] == "tool"]
            assert [(e["client_id"], e["role"], e["name"], e["request"], e.get("result"), e.get("error"))
                    for e in lookups] == _tool_turns(conv)
            assert result.tool_events == len(lookups)
            rows = {row["turn_index"]: row for row in result.rows}
            contexts = list(contexts_for(conv))
            assert sorted(rows) == [index for index, _ in contexts]
            for index, context in contexts:
                row = rows[index]
                assert context_from_events(conv.chatbot, [e for e in stored if e["seq"] <= row["for_seq"]]) == context
                echoed = await provider.suggest(conv.chatbot, context, 5)
                assert echoed is not None
                assert row["suggested_texts"] == [s.text for s in echoed.items]
            # The customer's connection received the conversation to its end, and never a lookup.
            assert result.customer_received.get(EV_MESSAGE, 0) > 0
            assert EV_TOOL_EVENT not in result.customer_received


def test_export_load_round_trip(sample_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    data = _renamed(load_dataset(sample_path), f"r{uuid.uuid4().hex[:6]}")
    chatbot = data.chatbot_ids()[0]
    strategy = make_strategy("tfidf", {"window": 2}).fit(data)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    assert resolve_alias(client, chatbot) is None
    version = export_champion(strategy, chatbot, mlflow_uri)
    assert resolve_alias(client, chatbot) == version
    assert int(client.get_model_version_by_alias(model_name(chatbot), CHAMPION_ALIAS).version) == version
    model = load_model_version(client, mlflow_uri, model_name(chatbot), version)
    assert model.metadata.signature.inputs.input_names() == ["context"]
    assert model.unwrap_python_model().strategy.describe() == strategy.describe()
    for conv in data.for_chatbot(chatbot):
        for _, context in contexts_for(conv):
            assert predict_suggestions(model, context, 3) == strategy.suggest(context, 3)
    # A second export moves the alias; the first version stays registered.
    assert export_champion(strategy, chatbot, mlflow_uri) == version + 1
    assert resolve_alias(client, chatbot) == version + 1
    assert int(client.get_model_version(model_name(chatbot), str(version)).version) == version


# ---------------------------------------------------------------------------------------------------------------
# One live server for the alias and no-champion tests


async def _claimed_conversation(url: str, admin_key: str, bot_id: str, http: HandoffHttp
                                ) -> tuple[str, Connection, Connection, Connection]:
    api_key = await http.create_bot(admin_key, bot_id, bot_id)
    token = await http.create_agent(admin_key, f"agent-{uuid.uuid4().hex[:8]}", "Alice", [bot_id])
    cid, customer_token = await http.create_conversation(api_key, bot_id)
    bot = await Connection(url, api_key).connect()
    customer = await Connection(url, customer_token).connect()
    agent = await Connection(url, token).connect()
    await customer.call(EV_MESSAGE, {"conversation_id": cid, "client_id": "c0", "text": "hello, I need a human"})
    await bot.call(EV_ESCALATE, {"conversation_id": cid})
    await agent.call(EV_CLAIM, {"conversation_id": cid})
    return cid, bot, customer, agent


async def _customer_says(customer: Connection, agent: Connection, cid: str, text: str, n: int) -> dict[str, Any]:
    ack = await customer.call(EV_MESSAGE, {"conversation_id": cid, "client_id": f"c{n}", "text": text})
    got = await agent.wait_for(cid, EV_SUGGESTIONS, lambda d: d["for_seq"] == ack["seq"], 30)
    assert got is not None, f"no suggestions for seq {ack['seq']}"
    data: dict[str, Any] = got.data
    return data


def test_moving_the_alias_changes_the_next_suggestions_and_a_bot_without_champion_chats(
        sample_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    data = _renamed(load_dataset(sample_path), f"a{uuid.uuid4().hex[:6]}")
    chatbot = next(b for b in data.chatbot_ids() if b.startswith("pizza_delivery"))
    first = make_strategy("tfidf", {"window": 1}).fit(data)
    second = make_strategy("tfidf", {"window": 3, "neighbours": 1, "ngram_max": 1}).fit(data)
    v1 = export_champion(first, chatbot, mlflow_uri)
    v2 = export_champion(second, chatbot, mlflow_uri, alias=None)  # registered, not yet the champion
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    refresh_s = 0.5
    server = start_server(tracking_uri=mlflow_uri, suggestions_k=3, champion_refresh_s=refresh_s)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            http = HandoffHttp(server.url, session)
            cid, bot, customer, agent = await _claimed_conversation(server.url, server.admin_key, chatbot, http)
            texts = ["my pizza is late", "order 12345, it was due an hour ago"]
            before = await _customer_says(customer, agent, cid, texts[0], 1)
            assert before["strategy"] == f"{first.describe()}@v{v1}"
            client.set_registered_model_alias(model_name(chatbot), CHAMPION_ALIAS, str(v2))
            await asyncio.sleep(refresh_s * 2)  # past the server's refresh period: its next message re-reads the alias
            after = await _customer_says(customer, agent, cid, texts[1], 2)
            assert after["strategy"] == f"{second.describe()}@v{v2}"
            context = Context(chatbot, (ContextTurn("customer", "hello, I need a human"),
                                        ContextTurn("customer", texts[0]), ContextTurn("customer", texts[1])))
            assert [i["text"] for i in after["items"]] == [s.text for s in second.suggest(context, 3)]
            assert [i["text"] for i in after["items"]] != [s.text for s in first.suggest(context, 3)]

            # A chatbot with no registered model: the chat works, and no suggestions are ever sent.
            lone = f"no-champion-{uuid.uuid4().hex[:6]}"
            cid2, bot2, customer2, agent2 = await _claimed_conversation(server.url, server.admin_key, lone, http)
            ack = await customer2.call(EV_MESSAGE, {"conversation_id": cid2, "client_id": "x1", "text": "still there?"})
            assert await agent2.wait_for(cid2, EV_MESSAGE, lambda d: d["seq"] == ack["seq"], 30) is not None
            reply = await agent2.call(EV_MESSAGE, {"conversation_id": cid2, "client_id": "x2", "text": "Yes!"})
            assert await customer2.wait_for(cid2, EV_MESSAGE, lambda d: d["seq"] == reply["seq"], 30) is not None
            # The other conversation's suggestions still flow meanwhile, from the same provider.
            await _customer_says(customer, agent, cid, "thanks", 3)
            status = await http.request("GET", f"/conversations/{cid2}/suggestions", agent2.token)
            assert status["items"] == [] and status["for_seq"] is None
            assert agent2.received(cid2, EV_SUGGESTIONS) == []
            for conn in (bot, customer, agent, bot2, customer2, agent2):
                await conn.close()

    try:
        asyncio.run(scenario())
    finally:
        assert server.stop() == 0


def test_replay_turns_have_the_predictions_columns() -> None:
    from copilot.data.predictions import COLUMNS
    from copilot.live.replay import REPLAY_COLUMNS, turns_frame

    frame = turns_frame([])
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert list(frame.columns) == REPLAY_COLUMNS
    assert isinstance(frame, pd.DataFrame)


def test_champions_file_shapes(tmp_path: Path) -> None:
    import json

    from copilot.serving.export import load_champions

    tuning = {"task": "t", "global": {"strategy": "tfidf", "params": {}},
              "per_chatbot": {"shop": {"candidates": [], "champion": {"candidate": "bm25(k1=1.2)", "strategy": "bm25",
                                                                       "params": {"k1": 1.2}, "is_global": False}}}}
    (tmp_path / "tuning.json").write_text(json.dumps(tuning))
    assert load_champions(tmp_path / "tuning.json") == {"shop": {"strategy": "bm25", "params": {"k1": 1.2}}}
    (tmp_path / "plain.json").write_text(json.dumps({"shop": {"strategy": "tfidf", "params": {"window": 2}},
                                                     "bank": {"strategy": "dense"}}))
    assert load_champions(tmp_path / "plain.json") == {"shop": {"strategy": "tfidf", "params": {"window": 2}},
                                                       "bank": {"strategy": "dense", "params": {}}}
    (tmp_path / "bad.json").write_text(json.dumps({"shop": {"params": {}}}))
    with pytest.raises(ValueError, match="shop: no champion strategy"):
        load_champions(tmp_path / "bad.json")


def test_replay_speeds() -> None:
    assert ReplayConfig(speed="asap").speed_factor() is None
    assert ReplayConfig(speed="realtime").speed_factor() == 1.0
    assert ReplayConfig(speed="x20").speed_factor() == 20.0
    with pytest.raises(ValueError, match="speed must be"):
        ReplayConfig(speed="fast").speed_factor()


def test_chatbots_with_the_same_champion_share_one_artifact_and_one_loaded_model(sample_path: Path,
                                                                                mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    from copilot.serving.champions import ChampionSuggester
    from copilot.serving.export import export_champions

    data = _renamed(load_dataset(sample_path), f"c{uuid.uuid4().hex[:6]}")
    champions = {bot: {"strategy": "tfidf", "params": {"window": 2}} for bot in data.chatbot_ids()}
    exported = export_champions(champions, data, mlflow_uri)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    sources = {client.get_model_version(e.name, str(e.version)).source for e in exported}
    assert len(exported) == 3 and len(sources) == 1
    assert all(resolve_alias(client, e.chatbot) == e.version for e in exported)

    async def served() -> list[Any]:
        suggester = ChampionSuggester(mlflow_uri)
        try:
            return [await suggester.model(bot) for bot in data.chatbot_ids()]
        finally:
            suggester.close()

    loaded = asyncio.run(served())
    assert all(item is not None for item in loaded)
    assert len({id(item.model) for item in loaded}) == 1  # one copy in memory for the three chatbots
    assert [item.strategy for item in loaded] == [f"{exported[0].strategy}@v{e.version}" for e in exported]
