"""The copilot sidebar hook with test providers that implement the real SuggestionProvider interface:
suggestions go to the claiming agent only, on claim, on customer messages and after the agent's own messages;
the context is exactly ``context_from_events`` over the stored events; stale results are dropped; feedback is
recorded; a slow provider never delays chat; an empty answer is sent as an empty set; and without a provider
nothing is ever sent."""

from __future__ import annotations

import asyncio
import json

import pytest
from handoff.app import create_app
from handoff.outcomes import SuggestionRequest
from handoff.settings import Settings, SettingsError
from handoff.suggestions import ProvidedSuggestions
from handoff_testing import ContextEchoTestProvider, GatedTestProvider, StartServer, parts

from copilot.data.context import Context, Suggestion, context_from_events
from copilot.live.protocol import ERR_FORBIDDEN, ERR_NOT_FOUND, EV_MESSAGE, EV_SUGGESTIONS


def described_context(suggestions: dict) -> dict:
    return json.loads(suggestions["items"][0]["text"])


async def test_suggestions_follow_the_conversation_and_only_the_claimer_gets_them(start_server: StartServer) -> None:
    server = await start_server(provider=ContextEchoTestProvider())
    bot = await server.bot(bot_id="bank_balance+restaurant_book+weather-" + __name__[-6:])
    alice, bob = await server.agent(bot, name="Alice"), await server.agent(bot, name="Bob")
    cid, customer_token = await server.conversation(bot)
    customer, bot_c = await server.client(customer_token), await server.client(bot.api_key)
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "what's my balance?"})
    await bot_c.ok("message", {"conversation_id": cid, "client_id": "b1", "text": "Which account?",
                               "label": "ask_account"})
    await bot_c.ok("escalate", {"conversation_id": cid})
    alice_c, bob_c = await server.client(alice.token), await server.client(bob.token)
    await bob_c.ok("join", {"conversation_id": cid})  # Bob reads along; suggestions are not for him
    claim = await alice_c.ok("claim", {"conversation_id": cid})

    on_claim = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == claim["seq"])
    assert on_claim["strategy"] == "context-echo-test" and on_claim["conversation_id"] == cid
    assert [set(i) for i in on_claim["items"]] == [{"suggestion_id", "text", "score", "label"},
                                                   {"suggestion_id", "text", "score"}]
    events = (await server.expect("GET", f"/conversations/{cid}/events", alice.token))["events"]
    expected = context_from_events(bot.bot_id, events)
    assert described_context(on_claim) == {"bot": bot.bot_id, "chatbot": bot.bot_id,
                                           "turns": [[t.role, t.text, t.label] for t in expected.turns]}
    assert described_context(on_claim)["turns"] == [["customer", "what's my balance?", None],
                                                    ["bot", "Which account?", "ask_account"]]

    # A customer message in state claimed: new suggestions for its seq.
    sent = await customer.ok("message", {"conversation_id": cid, "client_id": "c2", "text": "the savings one"})
    after_customer = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == sent["seq"])
    assert described_context(after_customer)["turns"][-1] == ["customer", "the savings one", None]

    # The agent replies twice in a row: the sidebar follows the latest state each time.
    first = await alice_c.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "One moment.",
                                         "label": "wait"})
    second = await alice_c.ok("message", {"conversation_id": cid, "client_id": "a2", "text": "It is 120 EUR."})
    latest = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == second["seq"])
    assert described_context(latest)["turns"][-2:] == [["agent", "One moment.", "wait"],
                                                       ["agent", "It is 120 EUR.", None]]
    assert first["seq"] + 1 == second["seq"]

    # Nobody else ever got suggestions; every offered one is stored.
    await customer.ok("message", {"conversation_id": cid, "client_id": "c3", "text": "thanks"})
    await bob_c.wait_for(EV_MESSAGE, lambda e: e["text"] == "thanks")
    assert bob_c.events(EV_SUGGESTIONS) == [] and customer.events(EV_SUGGESTIONS) == []
    assert bot_c.events(EV_SUGGESTIONS) == []
    offered = {i["suggestion_id"] for s in alice_c.events(EV_SUGGESTIONS) for i in s["items"]}
    async with parts(server).store.read() as tx:
        rows = await tx.suggestions.of_conversation(cid)
    assert offered <= {r["suggestion_id"] for r in rows}
    row = next(r for r in rows if r["suggestion_id"] == on_claim["items"][0]["suggestion_id"])
    assert (row["for_seq"], row["strategy"], row["rank"], row["label"], row["agent_id"]) == (
        claim["seq"], "context-echo-test", 1, "echo_context", alice.agent_id)

    # Feedback on an offered suggestion is recorded; only its agent may give it.
    sid = after_customer["items"][0]["suggestion_id"]
    await alice_c.ok("suggestion_feedback", {"conversation_id": cid, "suggestion_id": sid, "action": "edited"})
    refused = await bob_c.call("suggestion_feedback", {"conversation_id": cid, "suggestion_id": sid, "action": "sent"})
    assert refused["error"]["code"] == ERR_FORBIDDEN
    other_cid, _ = await server.conversation(bot)
    refused = await alice_c.call("suggestion_feedback", {"conversation_id": other_cid, "suggestion_id": sid,
                                                         "action": "sent"})
    assert refused["error"]["code"] == ERR_NOT_FOUND
    async with parts(server).store.read() as tx:
        feedback = await tx.feedback.of_conversation(cid)
    assert [(f["suggestion_id"], f["agent_id"], f["action"]) for f in feedback] == [(sid, alice.agent_id, "edited")]


async def test_a_slow_provider_never_delays_chat_and_stale_results_are_dropped(start_server: StartServer) -> None:
    provider = GatedTestProvider()
    server = await start_server(provider=provider)
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid)
    customer, alice_c = await server.client(customer_token), await server.client(alice.token)
    await alice_c.ok("claim", {"conversation_id": cid})
    # The provider is stuck: chat goes on regardless, acks and deliveries included.
    acks = []
    for i in range(3):
        acks.append(await customer.ok("message", {"conversation_id": cid, "client_id": f"c{i}", "text": f"q{i}"}))
        await alice_c.wait_for(EV_MESSAGE, lambda e, i=i: e["text"] == f"q{i}")
    assert not provider.gate.is_set() and alice_c.events(EV_SUGGESTIONS) == []

    provider.gate.set()  # every pending computation finishes now; only the latest seq is still current
    latest = await alice_c.wait_for(EV_SUGGESTIONS)
    assert latest["for_seq"] == acks[-1]["seq"] and latest["items"][0]["text"] == "reply to: q2"
    await customer.ok("message", {"conversation_id": cid, "client_id": "c9", "text": "q9"})
    await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["items"][0]["text"] == "reply to: q9")
    assert [s["for_seq"] for s in alice_c.events(EV_SUGGESTIONS)] == [acks[-1]["seq"], acks[-1]["seq"] + 1]
    async with parts(server).store.read() as tx:
        stored = await tx.suggestions.of_conversation(cid)
    assert {r["for_seq"] for r in stored} == {acks[-1]["seq"], acks[-1]["seq"] + 1}


async def test_a_result_for_an_older_seq_is_not_stored_or_sent(start_server: StartServer) -> None:
    """The staleness rule itself, step by step on the real service and store."""
    server = await start_server(provider=ContextEchoTestProvider())
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid)
    customer, alice_c = await server.client(customer_token), await server.client(alice.token)
    claim = await alice_c.ok("claim", {"conversation_id": cid})
    await alice_c.wait_for(EV_SUGGESTIONS)
    sidebar = parts(server).services.sidebar
    old = SuggestionRequest(cid, bot.bot_id, alice.agent_id, claim["seq"])
    prepared = await sidebar.compute(old)
    assert prepared is not None  # still current when computed ...
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "newer"})
    assert await sidebar.offer(prepared) is None  # ... stale by the time it is ready: dropped
    assert await sidebar.compute(old) is None  # and not even computed once stale
    async with parts(server).store.read() as tx:
        stored_ids = {r["suggestion_id"] for r in await tx.suggestions.of_conversation(cid)}
    assert not stored_ids & {r["suggestion_id"] for r in prepared.rows}


class UnsureTestProvider:
    """Answers only when the customer's latest message ends with '?': otherwise it is not confident enough to show
    anything (what a trigger threshold does), and says so with an empty answer."""

    strategy = "unsure-test"

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        last = context.last("customer")
        sure = last is not None and last.text.endswith("?")
        return ProvidedSuggestions(self.strategy, [Suggestion("Yes, we can.", 0.9)] if sure else [])


async def test_an_empty_answer_is_sent_so_the_screen_clears(start_server: StartServer) -> None:
    server = await start_server(provider=UnsureTestProvider())
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid)
    customer, alice_c = await server.client(customer_token), await server.client(alice.token)
    await alice_c.ok("claim", {"conversation_id": cid})
    asked = await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "can you help?"})
    shown = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == asked["seq"])
    assert [i["text"] for i in shown["items"]] == ["Yes, we can."]
    told = await customer.ok("message", {"conversation_id": cid, "client_id": "c2", "text": "my card is blocked"})
    unsure = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == told["seq"])
    assert unsure["items"] == [] and unsure["strategy"] == "unsure-test"
    async with parts(server).store.read() as tx:  # only what was shown is stored
        assert [r["for_seq"] for r in await tx.suggestions.of_conversation(cid)] == [asked["seq"]]
    status, current = await server.request("GET", f"/conversations/{cid}/suggestions", alice.token)
    assert status == 200 and current["items"] == []


async def test_without_a_provider_no_suggestions_are_ever_sent(start_server: StartServer) -> None:
    server = await start_server()
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid)
    customer, alice_c = await server.client(customer_token), await server.client(alice.token)
    await alice_c.ok("claim", {"conversation_id": cid})
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hello"})
    await alice_c.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "hi"})
    await customer.ok("message", {"conversation_id": cid, "client_id": "c2", "text": "bye"})
    await alice_c.wait_for(EV_MESSAGE, lambda e: e["text"] == "bye")
    await asyncio.sleep(0.2)  # background tasks would have had time to answer
    assert alice_c.events(EV_SUGGESTIONS) == []
    async with parts(server).store.read() as tx:
        assert await tx.suggestions.of_conversation(cid) == []


async def test_a_provider_can_be_named_in_the_settings(start_server: StartServer) -> None:
    server = await start_server(suggestion_provider="handoff_testing:make_echo_test_provider")
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid)
    alice_c = await server.client(alice.token)
    await alice_c.ok("claim", {"conversation_id": cid})
    assert (await alice_c.wait_for(EV_SUGGESTIONS))["strategy"] == "context-echo-test"


@pytest.mark.parametrize("spec", ["no_colon", "no_such_module_xyz:make", "handoff_testing:no_such_factory",
                                  "handoff_testing:WAIT_S"])
async def test_a_wrong_provider_setting_is_refused_at_start(spec: str, tmp_path: object) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/h.db", suggestion_provider=spec))
    from aiohttp import web

    runner = web.AppRunner(app)
    with pytest.raises(SettingsError, match="HANDOFF_SUGGESTION_PROVIDER"):
        await runner.setup()
    await runner.cleanup()
