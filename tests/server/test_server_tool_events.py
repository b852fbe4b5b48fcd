"""Tool events (protocol 1.1) against the real server on SQLite and PostgreSQL: the bot and the holding agent post
the lookups they made over HTTP and Socket.IO; each is stored with the next seq, acknowledged with it, stored once per
``client_id``, seen by the agent side and the bot (live, in the claim transcript, in the hand-back turns), and never by
the customer (not live, not in its resume, not in its GET .../events). Bad tool events are refused and change
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from handoff_testing import ContextEchoTestProvider, Server, StartServer, parts

from copilot.live.protocol import (
    ERR_FORBIDDEN,
    ERR_INVALID_PAYLOAD,
    ERR_INVALID_TRANSITION,
    ERR_TOO_LARGE,
    EV_HANDED_BACK,
    EV_MESSAGE,
    EV_SUGGESTIONS,
    EV_TOOL_EVENT,
    MAX_TOOL_EVENT_BYTES,
)

LOOKUP = {"name": "hotel_search", "request": {"city": "Paris", "stars": 4},
          "result": {"items": [{"name": "Hotel du Nord", "available": True}], "total": 1}}


async def stored(server: Server, conversation_id: str) -> list[dict[str, Any]]:
    async with parts(server).store.read() as tx:
        return await tx.events.after(conversation_id, 0)


def tools(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "tool"]


async def test_tool_events_reach_the_agent_side_and_the_bot_never_the_customer(server: Server) -> None:
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    bot_c = await server.client(bot.api_key)
    alice_c = await server.client(alice.token)
    await customer.ok("join", {"conversation_id": cid})  # connected and subscribed the whole time
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "a hotel in Paris?"})

    # The bot's lookup over HTTP, in status bot: the next seq, and the bot hears it live.
    ack = await server.expect("POST", f"/conversations/{cid}/tool-events", bot.api_key, json=LOOKUP)
    assert ack == {"seq": 2}
    live = await bot_c.wait_for(EV_TOOL_EVENT, lambda e: e["seq"] == 2)
    assert live["kind"] == "tool" and live["role"] == "bot" and live["sender"] == bot.bot_id
    assert (live["name"], live["request"], live["result"]) == (LOOKUP["name"], LOOKUP["request"], LOOKUP["result"])
    assert "error" not in live and live["client_id"]
    # Over Socket.IO, a failed lookup: an error and no result.
    failed = {"conversation_id": cid, "client_id": "t2", "name": "hotel_book", "request": {"hotel": "Nord"},
              "error": "the booking service timed out"}
    assert (await bot_c.ok(EV_TOOL_EVENT, failed))["seq"] == 3
    await server.escalate(bot, cid)  # seq 4

    # The claim transcript holds both; the agent's own lookup reaches the agent side and the bot, with its seq.
    claim = await alice_c.ok("claim", {"conversation_id": cid})
    assert [(e["seq"], e.get("name")) for e in tools(claim["transcript"])] == [(2, "hotel_search"), (3, "hotel_book")]
    assert tools(claim["transcript"])[1]["error"] == "the booking service timed out"
    mine = {"conversation_id": cid, "client_id": "a1", "name": "crm_lookup", "request": {"customer": "c-1"},
            "result": {}}
    assert (await alice_c.ok(EV_TOOL_EVENT, mine))["seq"] == 6
    assert (await bot_c.wait_for(EV_TOOL_EVENT, lambda e: e["seq"] == 6))["role"] == "agent"
    second = await server.client(alice.token)  # the agent's other device, subscribed by resume
    resumed = await second.ok("resume", {"conversation_id": cid, "after_seq": 0})
    assert [e["seq"] for e in tools(resumed["events"])] == [2, 3, 6]
    await alice_c.ok("message", {"conversation_id": cid, "client_id": "a2", "text": "Hotel du Nord is free."})
    assert (await customer.wait_for(EV_MESSAGE, lambda e: e["seq"] == 7))["text"] == "Hotel du Nord is free."

    # The hand-back turns carry the lookup made after the escalation, in order.
    await alice_c.ok("hand_back", {"conversation_id": cid})
    back = await bot_c.wait_for(EV_HANDED_BACK, lambda e: e["conversation_id"] == cid)
    assert [(t["seq"], t["kind"]) for t in back["turns"]] == [(6, "tool"), (7, "message")]

    # The customer: no tool event live, none in its resume or its GET .../events (gaps in seq are normal).
    assert customer.events(EV_TOOL_EVENT) == []
    assert all(data.get("kind") != "tool" for _, data in customer.received if isinstance(data, dict))
    seen = (await customer.ok("resume", {"conversation_id": cid, "after_seq": 0}))["events"]
    assert tools(seen) == [] and [e["seq"] for e in seen] == [1, 4, 5, 7, 8]
    got = await server.expect("GET", f"/conversations/{cid}/events?after_seq=0", customer_token)
    assert got["events"] == seen
    as_bot = await server.expect("GET", f"/conversations/{cid}/events?after_seq=0", bot.api_key)
    assert [e["seq"] for e in tools(as_bot["events"])] == [2, 3, 6]
    assert tools(await stored(server, cid)) == tools(as_bot["events"])


async def test_a_repeated_client_id_is_stored_once(server: Server) -> None:
    bot = await server.bot()
    cid, _ = await server.conversation(bot)
    bot_c = await server.client(bot.api_key)
    payload = {"conversation_id": cid, "client_id": "same", **LOOKUP}
    first = await bot_c.ok(EV_TOOL_EVENT, payload)
    again = await bot_c.ok(EV_TOOL_EVENT, payload)
    assert first == {"ok": True, "seq": 1} and again == {"ok": True, "seq": 1, "duplicate": True}
    over_http = await server.expect("POST", f"/conversations/{cid}/tool-events", bot.api_key,
                                    json={"client_id": "same", **LOOKUP})
    assert over_http == {"seq": 1, "duplicate": True}
    assert len(await stored(server, cid)) == 1


async def test_an_agent_lookup_asks_for_new_suggestions(start_server: StartServer) -> None:
    server = await start_server(provider=ContextEchoTestProvider())
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "is the Nord free?"}])
    alice_c = await server.client(alice.token)
    claim = await alice_c.ok("claim", {"conversation_id": cid})
    await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == claim["seq"])
    ack = await alice_c.ok(EV_TOOL_EVENT, {"conversation_id": cid, "client_id": "t1", **LOOKUP})
    offered = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == ack["seq"])
    assert offered["items"]


BAD: list[tuple[Any, str]] = [
    ({"client_id": "x", "request": {}}, ERR_INVALID_PAYLOAD),  # no name
    ({"client_id": "x", "name": "", "request": {}}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "n" * 101, "request": {}}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "lookup"}, ERR_INVALID_PAYLOAD),  # no request
    ({"client_id": "x", "name": "lookup", "request": [1, 2]}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "lookup", "request": {}, "result": "found"}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "lookup", "request": {}, "error": 42}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "lookup", "request": {}, "extra": 1}, ERR_INVALID_PAYLOAD),
    ({"client_id": "x", "name": "lookup", "request": {"q": "x\ud800"}}, ERR_INVALID_PAYLOAD),  # a lone surrogate
    ({"client_id": "x", "name": "lookup", "request": {"blob": "z" * MAX_TOOL_EVENT_BYTES}}, ERR_TOO_LARGE),
    ({"name": "lookup", "request": {}}, ERR_INVALID_PAYLOAD),  # over Socket.IO the client_id is required
    ("not an object", ERR_INVALID_PAYLOAD),
]


@pytest.mark.parametrize(("payload", "code"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
async def test_bad_tool_events_are_refused_and_change_nothing(server: Server, payload: Any, code: str) -> None:
    bot = await server.bot()
    cid, _ = await server.conversation(bot)
    bot_c = await server.client(bot.api_key)
    before = await stored(server, cid)
    body = {"conversation_id": cid, **payload} if isinstance(payload, dict) else payload
    assert (await bot_c.call(EV_TOOL_EVENT, body))["error"]["code"] == code
    assert await stored(server, cid) == before


async def test_who_may_post_a_tool_event(server: Server) -> None:
    bot, other = await server.bot(), await server.bot()
    alice, bob = await server.agent(bot), await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    path = f"/conversations/{cid}/tool-events"
    for token, code in ((customer_token, ERR_FORBIDDEN), (other.api_key, ERR_FORBIDDEN),
                        (alice.token, ERR_FORBIDDEN)):  # an agent that does not hold it
        status, body = await server.request("POST", path, token, json=LOOKUP)
        assert body["error"]["code"] == code and status == 403
    await server.escalate(bot, cid)
    await (await server.client(alice.token)).ok("claim", {"conversation_id": cid})
    for token, code in ((bot.api_key, ERR_INVALID_TRANSITION), (bob.token, ERR_FORBIDDEN)):  # claimed by Alice
        status, body = await server.request("POST", path, token, json=LOOKUP)
        assert body["error"]["code"] == code
    assert (await server.expect("POST", path, alice.token, json=LOOKUP))["seq"] == 3
    await (await server.client(alice.token)).ok("resolve", {"conversation_id": cid})
    status, body = await server.request("POST", path, alice.token, json=LOOKUP)
    assert status == 409 and body["error"]["code"] == ERR_INVALID_TRANSITION  # nothing is added once resolved
    assert [e["kind"] for e in await stored(server, cid)] == ["escalated", "claimed", "tool", "resolved"]
