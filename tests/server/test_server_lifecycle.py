"""The whole lifecycle of docs/protocol.md with real Socket.IO clients, on SQLite and PostgreSQL: create, bot turns,
escalate, notify, claim with the transcript, chat both ways with typing, hand back (event and a webhook received by
a real local HTTP endpoint), resolve, reopen."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest
from handoff.clock import ManualClock
from handoff_testing import Server, StartServer, WebhookReceiver, parts

from copilot.live.protocol import (
    ERR_FORBIDDEN,
    ERR_INVALID_TRANSITION,
    EV_CLAIMED,
    EV_ESCALATION,
    EV_HANDED_BACK,
    EV_MESSAGE,
    EV_STATUS,
    EV_TYPING,
)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


async def webhook_row(server: Server, conversation_id: str) -> dict[str, Any]:
    """The conversation's one outbox row."""
    async with parts(server).store.read() as tx:
        (row,) = await tx.webhooks.of_conversation(conversation_id)
    return row


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


async def test_whole_lifecycle(server: Server, receiver: WebhookReceiver) -> None:
    await run_whole_lifecycle(server, receiver)


async def run_whole_lifecycle(server: Server, receiver: WebhookReceiver) -> None:
    """Escalate, notify, claim, chat both ways with typing, hand back with a webhook, resolve, reopen: checked
    through clients only, so it runs against any server (in this process or another)."""
    bot = await server.bot(webhook=receiver.url)
    alice = await server.agent(bot, name="Alice")
    bob = await server.agent(bot, name="Bob")
    cid, customer_token = await server.conversation(bot, customer={"id": "cust-1", "name": "Carol"})

    bot_c = await server.client(bot.api_key)
    customer = await server.client(customer_token)
    alice_c = await server.client(alice.token)
    bob_c = await server.client(bob.token)

    # Bot phase: the bot hears the customer (state bot) and answers.
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "my card is lost"}
                              ))["seq"] == 1
    heard = await bot_c.wait_for(EV_MESSAGE, lambda e: e["seq"] == 1)
    assert heard["role"] == "customer" and heard["sender"] == "cust-1" and heard["text"] == "my card is lost"
    assert (await bot_c.ok("message", {"conversation_id": cid, "client_id": "b1", "text": "I can block it.",
                                       "label": "offer_block"}))["seq"] == 2
    reply = await customer.wait_for(EV_MESSAGE, lambda e: e["seq"] == 2)
    assert reply["role"] == "bot" and reply["label"] == "offer_block"

    # Escalation: every connected agent of the bot is notified; the customer sees the status.
    assert (await bot_c.ok("escalate", {"conversation_id": cid, "reason": "customer asks for a human"})
            )["status"] == "waiting"
    for agent_c in (alice_c, bob_c):
        note = await agent_c.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid)
        assert note["bot_id"] == bot.bot_id and note["reason"] == "customer asks for a human"
        assert note["preview"] == "my card is lost" and note["waiting_since"].endswith("Z")
    assert (await customer.wait_for(EV_STATUS, lambda e: e["status"] == "waiting"))["seq"] == 3
    queue = await server.expect("GET", "/conversations?status=waiting", alice.token)
    assert [c["conversation_id"] for c in queue["conversations"]] == [cid]

    # While waiting: the customer's message is stored (not sent to the bot); the bot may still talk.
    await customer.ok("message", {"conversation_id": cid, "client_id": "c2", "text": "hello?"})
    await bot_c.ok("message", {"conversation_id": cid, "client_id": "b2", "text": "An agent will be with you."})

    # Claim: the transcript holds every event from seq 1, bot turns included; Bob's queue view updates.
    won = await alice_c.ok("claim", {"conversation_id": cid})
    assert won["status"] == "claimed"
    assert [e["seq"] for e in won["transcript"]] == [1, 2, 3, 4, 5, 6]
    assert kinds(won["transcript"]) == ["message", "message", "escalated", "message", "message", "claimed"]
    assert [e.get("role") for e in won["transcript"][:2]] == ["customer", "bot"]
    claimed = await bob_c.wait_for(EV_CLAIMED, lambda e: e["conversation_id"] == cid)
    assert claimed["agent_id"] == alice.agent_id and claimed["agent_name"] == "Alice"
    joined = await customer.wait_for(EV_STATUS, lambda e: e["status"] == "claimed")
    assert joined["agent_name"] == "Alice"
    assert (await server.expect("GET", "/conversations?status=waiting", bob.token))["conversations"] == []

    # Live chat both ways, with typing that is never echoed to the sender.
    await customer.ok("typing", {"conversation_id": cid, "state": "start"})
    assert (await alice_c.wait_for(EV_TYPING))["role"] == "customer"
    await alice_c.ok("typing", {"conversation_id": cid, "state": "start"})
    assert (await customer.wait_for(EV_TYPING))["role"] == "agent"
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "c3", "text": "thanks"}))["seq"] == 7
    assert (await alice_c.wait_for(EV_MESSAGE, lambda e: e["seq"] == 7))["text"] == "thanks"
    await alice_c.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "Card blocked.",
                                 "label": "card_blocked"})
    got = await customer.wait_for(EV_MESSAGE, lambda e: e["seq"] == 8)
    assert got["role"] == "agent" and got["sender"] == alice.agent_id and got["label"] == "card_blocked"
    assert all(d["role"] != "customer" for d in customer.events(EV_TYPING))  # own typing never came back
    assert all(d["role"] != "agent" for d in alice_c.events(EV_TYPING))
    # The bot holds nothing now: it may not write, and it never heard the chat.
    refused = await bot_c.call("message", {"conversation_id": cid, "client_id": "b3", "text": "me too"})
    assert refused["error"]["code"] == ERR_INVALID_TRANSITION
    assert (await bob_c.call("message", {"conversation_id": cid, "client_id": "x", "text": "hi"})
            )["error"]["code"] == ERR_FORBIDDEN

    # Hand back: the bot gets every message since the escalation (event and webhook); the customer is told.
    assert (await alice_c.ok("hand_back", {"conversation_id": cid, "note": "card blocked, new one ordered"})
            )["status"] == "bot"
    back = await bot_c.wait_for(EV_HANDED_BACK, lambda e: e["conversation_id"] == cid)
    assert back["note"] == "card blocked, new one ordered"
    assert [t["seq"] for t in back["turns"]] == [4, 5, 7, 8]
    assert [t["text"] for t in back["turns"]] == ["hello?", "An agent will be with you.", "thanks", "Card blocked."]
    assert (await customer.wait_for(EV_STATUS, lambda e: e["status"] == "bot"))["kind"] == "handed_back"
    await asyncio.wait_for(receiver.received.wait(), 10)
    (hook,) = receiver.bodies()
    assert hook["event"] == "handed_back" and hook["bot_id"] == bot.bot_id and hook["conversation_id"] == cid
    assert hook["turns"] == back["turns"] and hook["note"] == back["note"]
    assert (await alice_c.call("message", {"conversation_id": cid, "client_id": "a2", "text": "one more"})
            )["error"]["code"] == ERR_INVALID_TRANSITION

    # Back with the bot: it hears the customer again, then resolves.
    await customer.ok("message", {"conversation_id": cid, "client_id": "c4", "text": "bye"})
    assert (await bot_c.wait_for(EV_MESSAGE, lambda e: e["text"] == "bye"))["seq"] == 10
    assert (await bot_c.ok("resolve", {"conversation_id": cid}))["status"] == "resolved"
    assert (await customer.wait_for(EV_STATUS, lambda e: e["status"] == "resolved"))["seq"] == 11

    # Reopen: the customer writes again, the conversation is the bot's again.
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "c5", "text": "one more thing"})
            )["seq"] == 13
    assert (await bot_c.wait_for(EV_STATUS, lambda e: e["kind"] == "reopened"))["status"] == "bot"
    assert (await bot_c.wait_for(EV_MESSAGE, lambda e: e["seq"] == 13))["text"] == "one more thing"

    # The bot never received customer messages while it did not hold the conversation.
    assert [e["seq"] for e in bot_c.events(EV_MESSAGE) if e["role"] == "customer"] == [1, 10, 13]
    stored = (await server.expect("GET", f"/conversations/{cid}/events?after_seq=0", customer_token))["events"]
    assert [e["seq"] for e in stored] == list(range(1, 14))
    assert kinds(stored) == ["message", "message", "escalated", "message", "message", "claimed", "message",
                             "message", "handed_back", "message", "resolved", "reopened", "message"]


async def test_http_escalation_stores_the_transcript_then_agent_resolves(server: Server) -> None:
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    assert (await customer.ok("join", {"conversation_id": cid}))["last_seq"] == 0
    alice_c = await server.client(alice.token)
    transcript = [{"role": "customer", "text": "I want to change my booking", "at": "2025-01-31T10:00:00Z"},
                  {"role": "bot", "text": "Which booking?", "label": "ask_booking"},
                  {"role": "customer", "text": "the one on Friday"}]
    assert (await server.escalate(bot, cid, reason="out of scope", transcript=transcript))["status"] == "waiting"
    note = await alice_c.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid)
    assert note["preview"] == "the one on Friday"
    # The customer's socket hears the stored turns too, so its seq stream has no gap.
    await customer.wait_for(EV_STATUS, lambda e: e["status"] == "waiting")
    assert [e["seq"] for e in customer.events(EV_MESSAGE)] == [1, 2, 3]

    won = await alice_c.ok("claim", {"conversation_id": cid})
    turns = [e for e in won["transcript"] if e["kind"] == "message"]
    assert [(t["role"], t["text"]) for t in turns] == [(t["role"], t["text"]) for t in transcript]
    assert turns[0]["at"] == "2025-01-31T10:00:00Z" and turns[1]["label"] == "ask_booking"
    assert kinds(won["transcript"]) == ["message", "message", "message", "escalated", "claimed"]

    assert (await alice_c.ok("resolve", {"conversation_id": cid}))["status"] == "resolved"
    assert (await customer.wait_for(EV_STATUS, lambda e: e["status"] == "resolved"))["kind"] == "resolved"
    assert (await alice_c.call("resolve", {"conversation_id": cid}))["error"]["code"] == ERR_INVALID_TRANSITION


async def test_claim_subscribes_every_socket_of_the_agent(server: Server) -> None:
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    phone = await server.client(alice.token)
    browser = await server.client(alice.token)
    await server.escalate(bot, cid)
    await phone.ok("claim", {"conversation_id": cid})
    # The browser did not claim and did not join, yet it hears the conversation: a won claim subscribes both.
    assert (await browser.wait_for(EV_CLAIMED))["agent_id"] == alice.agent_id
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})
    for sock in (phone, browser):
        assert (await sock.wait_for(EV_MESSAGE, lambda e: e["text"] == "hi"))["role"] == "customer"
    # What the agent writes from its phone reaches its browser too (only the sending socket is skipped).
    await phone.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "hello from the phone"})
    assert (await browser.wait_for(EV_MESSAGE, lambda e: e["role"] == "agent"))["text"] == "hello from the phone"
    await customer.wait_for(EV_MESSAGE, lambda e: e["role"] == "agent")
    assert phone.events(EV_MESSAGE, cid) == [e for e in phone.events(EV_MESSAGE, cid) if e["role"] == "customer"]


async def test_typing_is_throttled_and_expires_without_stop(start_server: StartServer) -> None:
    clock = ManualClock()
    server = await start_server(clock=clock, typing_timeout_s=0.6, typing_throttle_s=30.0)
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    alice_c = await server.client(alice.token)
    await server.escalate(bot, cid)
    await alice_c.ok("claim", {"conversation_id": cid})
    for _ in range(5):  # a burst of starts is forwarded once
        await customer.ok("typing", {"conversation_id": cid, "state": "start"})
    await alice_c.wait_for(EV_TYPING, lambda e: e["state"] == "start")
    # No stop ever comes from the customer: the server sends it by itself after the timeout, not before.
    clock.advance(0.5)
    await clock.settle()
    assert [e["state"] for e in alice_c.events(EV_TYPING)] == ["start"]
    clock.advance(0.2)
    stop = await alice_c.wait_for(EV_TYPING, lambda e: e["state"] == "stop")
    assert stop == {"conversation_id": cid, "role": "customer", "state": "stop"}
    assert [e["state"] for e in alice_c.events(EV_TYPING)] == ["start", "stop"]
    # A new start after the expiry is forwarded again, and a message ends it at once.
    await customer.ok("typing", {"conversation_id": cid, "state": "start"})
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "done typing"})
    await alice_c.wait_for(EV_MESSAGE, lambda e: e["text"] == "done typing")
    await alice_c.wait_for(EV_TYPING, lambda e: len(alice_c.events(EV_TYPING)) == 4)
    assert [e["state"] for e in alice_c.events(EV_TYPING)] == ["start", "stop", "start", "stop"]
    assert customer.events(EV_TYPING) == []


async def test_webhook_is_retried_until_delivered_and_signed(start_server: StartServer) -> None:
    receiver = await WebhookReceiver(fail_first=2).start()
    clock = ManualClock()
    try:
        server = await start_server(clock=clock, webhook_secret="s3cret-signing-key", webhook_backoff_s=0.5,
                                    webhook_poll_s=0.2)
        bot = await server.bot(webhook=receiver.url)
        alice = await server.agent(bot)
        cid, _ = await server.conversation(bot)
        alice_c = await server.client(alice.token)
        await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "help"}])
        await alice_c.ok("claim", {"conversation_id": cid})
        await alice_c.ok("hand_back", {"conversation_id": cid})
        await clock.settle()
        assert len(receiver.calls) == 1  # a 503: the next attempt after the backoff, 0.5 s, doubling
        row = await webhook_row(server, cid)
        assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] == clock.time() + 0.5
        for _ in range(2):  # the deliverer polls every 0.2 s: not before the backoff is over
            clock.advance(0.2)
            await clock.settle()
            assert len(receiver.calls) == 1
        clock.advance(0.2)
        await clock.settle()
        assert len(receiver.calls) == 2
        assert (await webhook_row(server, cid))["next_attempt_at"] == clock.time() + 1.0
        clock.advance(1.0)
        await clock.settle()
        assert len(receiver.calls) == 3 and receiver.received.is_set()  # two 503s, then delivered
        assert [h["X-Handoff-Attempt"] for h, _ in receiver.calls] == ["1", "2", "3"]
        headers, body = receiver.calls[-1]
        expected = hmac.new(b"s3cret-signing-key", body, hashlib.sha256).hexdigest()
        assert headers["X-Handoff-Signature"] == f"sha256={expected}"
        assert len({h["X-Handoff-Delivery"] for h, _ in receiver.calls}) == 1
        row = await webhook_row(server, cid)
        assert row["state"] == "delivered" and row["attempts"] == 3 and row["delivered_at"] == clock.time()
    finally:
        await receiver.stop()


async def test_webhook_gives_up_after_the_attempts_and_says_so(start_server: StartServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    receiver = await WebhookReceiver(fail_first=100).start()
    clock = ManualClock()
    try:
        server = await start_server(clock=clock, webhook_max_attempts=2)
        bot = await server.bot(webhook=receiver.url)
        alice = await server.agent(bot)
        cid, _ = await server.conversation(bot)
        alice_c = await server.client(alice.token)
        await server.escalate(bot, cid)
        await alice_c.ok("claim", {"conversation_id": cid})
        with caplog.at_level("WARNING", logger="handoff.webhooks"):
            await alice_c.ok("hand_back", {"conversation_id": cid})
            await clock.settle()
            clock.advance(0.2)  # the backoff (0.1 s) is over at the deliverer's next poll
            await clock.settle()
            clock.advance(3600.0)  # no third attempt, however long one waits
            await clock.settle()
            row = await webhook_row(server, cid)
        assert row["state"] == "failed" and row["attempts"] == 2 and len(receiver.calls) == 2
        assert any("FAILED for good after 2 attempts" in r.getMessage() for r in caplog.records)
    finally:
        await receiver.stop()
