"""Reconnect and idempotent resends: a client that was away gets exactly what it missed, in order, once;
a resent client_id is stored once and acknowledged with its first seq."""

from __future__ import annotations

import asyncio

from handoff_testing import Agent, Bot, Server, parts

from copilot.live.protocol import EV_MESSAGE


async def claimed_conversation(server: Server) -> tuple[str, str, Agent, Bot]:
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "hello"}])
    return cid, customer_token, alice, bot


async def test_resume_returns_exactly_the_missed_events(server: Server) -> None:
    cid, customer_token, alice, _ = await claimed_conversation(server)
    agent = await server.client(alice.token)
    customer = await server.client(customer_token)
    claim = await agent.ok("claim", {"conversation_id": cid})
    seen = claim["transcript"][-1]["seq"]
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "first"})
    await agent.wait_for(EV_MESSAGE, lambda e: e["text"] == "first")
    seen = max(seen, max(e["seq"] for e in agent.events(EV_MESSAGE)))

    # The agent drops off; the conversation goes on without it.
    await agent.close()
    missed_texts = [f"while away {i}" for i in range(5)]
    for i, text in enumerate(missed_texts):
        await customer.ok("message", {"conversation_id": cid, "client_id": f"away-{i}", "text": text})

    # It comes back on a new socket and says the last seq it saw.
    back = await server.client(alice.token)
    resumed = await back.ok("resume", {"conversation_id": cid, "after_seq": seen})
    assert [e["text"] for e in resumed["events"]] == missed_texts
    seqs = [e["seq"] for e in resumed["events"]]
    assert seqs == list(range(seen + 1, seen + 1 + len(missed_texts)))
    assert resumed["status"] == "claimed"

    # Resuming subscribes: what comes next arrives live, and nothing of the resumed part arrives twice.
    await customer.ok("message", {"conversation_id": cid, "client_id": "after", "text": "after resume"})
    live = await back.wait_for(EV_MESSAGE, lambda e: e["text"] == "after resume")
    assert live["seq"] == seqs[-1] + 1
    assert [e["seq"] for e in back.events(EV_MESSAGE)] == [live["seq"]]
    # The HTTP route returns the same.
    body = await server.expect("GET", f"/conversations/{cid}/events?after_seq={seen}", alice.token)
    assert [e["seq"] for e in body["events"]] == [*seqs, live["seq"]]
    assert body["events"][: len(seqs)] == resumed["events"]


async def test_resume_during_a_stream_loses_nothing_and_doubles_nothing(server: Server) -> None:
    """A client resumes while another party is writing: ack + broadcasts together are exactly the stream."""
    cid, customer_token, alice, _ = await claimed_conversation(server)
    agent = await server.client(alice.token)
    await agent.ok("claim", {"conversation_id": cid})
    customer = await server.client(customer_token)
    total = 60

    streaming = asyncio.Event()

    async def writer() -> None:
        for i in range(total):
            await customer.ok("message", {"conversation_id": cid, "client_id": f"s{i}", "text": f"m{i}"})
            if i == 10:
                streaming.set()

    task = asyncio.ensure_future(writer())
    await streaming.wait()
    reader = await server.client(customer_token)  # the customer's second device, resuming mid-stream
    resumed = await reader.ok("resume", {"conversation_id": cid, "after_seq": 0})
    await task
    last = (await customer.ok("join", {"conversation_id": cid}))["last_seq"]
    if resumed["events"][-1]["seq"] < last:
        await reader.wait_for(EV_MESSAGE, lambda e: e["seq"] == last)
    live = [e["seq"] for e in reader.events(EV_MESSAGE)]
    assert resumed["events"] and live, "the resume did not happen mid-stream; the test proves nothing"
    assert [e["seq"] for e in resumed["events"]] + live == list(range(1, last + 1))


async def test_resent_client_id_is_stored_once_with_the_same_seq(server: Server) -> None:
    cid, customer_token, alice, _ = await claimed_conversation(server)
    agent = await server.client(alice.token)
    await agent.ok("claim", {"conversation_id": cid})
    customer = await server.client(customer_token)
    first = await customer.ok("message", {"conversation_id": cid, "client_id": "same", "text": "only once"})
    again = await customer.ok("message", {"conversation_id": cid, "client_id": "same", "text": "only once"})
    assert again["seq"] == first["seq"] and again["duplicate"] is True
    # Resent from another socket after a reconnect, even after the conversation moved on: still the first seq.
    await agent.ok("hand_back", {"conversation_id": cid})
    other = await server.client(customer_token)
    assert (await other.ok("message", {"conversation_id": cid, "client_id": "same", "text": "only once"})
            )["seq"] == first["seq"]
    # Concurrent resends race to the database: still one row.
    acks = await asyncio.gather(*(customer.call("message", {"conversation_id": cid, "client_id": "burst",
                                                            "text": "x"}) for _ in range(10)))
    assert len({a["seq"] for a in acks}) == 1 and all(a["ok"] for a in acks)
    events = (await server.expect("GET", f"/conversations/{cid}/events", customer_token))["events"]
    assert sum(1 for e in events if e.get("client_id") == "same") == 1
    assert sum(1 for e in events if e.get("client_id") == "burst") == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # The agent (still subscribed after handing back) heard "only once" once and the burst once.
    await agent.wait_for(EV_MESSAGE, lambda e: e["text"] == "x")
    assert [e["text"] for e in agent.events(EV_MESSAGE)].count("x") == 1
    assert [e["text"] for e in agent.events(EV_MESSAGE)].count("only once") == 1
    # The same client_id from another sender is another message.
    assert (await agent.call("message", {"conversation_id": cid, "client_id": "same", "text": "x"})
            )["error"]["code"] == "invalid_transition"  # refused for its state, not taken for a resend


async def test_join_reports_status_and_last_seq(server: Server) -> None:
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    assert (await customer.ok("join", {"conversation_id": cid})) == {"ok": True, "status": "bot", "last_seq": 0,
                                                                     "agent_id": None}
    await customer.ok("message", {"conversation_id": cid, "client_id": "1", "text": "hi"})
    assert (await customer.ok("join", {"conversation_id": cid}))["last_seq"] == 1
    async with parts(server).store.read() as tx:
        assert (await tx.conversations.get(cid)).last_seq == 1  # type: ignore[union-attr]
