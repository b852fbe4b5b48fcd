"""Isolation between tenants and every error code of the protocol: each bad input gets a clear error and
changes nothing."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
import socketio
from handoff_testing import ADMIN_KEY, Client, Server, StartServer

from copilot.live.protocol import (
    ERR_ALREADY_CLAIMED,
    ERR_CONFLICT,
    ERR_FORBIDDEN,
    ERR_INVALID_PAYLOAD,
    ERR_INVALID_TRANSITION,
    ERR_NOT_FOUND,
    ERR_RATE_LIMITED,
    ERR_TOO_LARGE,
    ERR_UNAUTHORIZED,
    EV_ESCALATION,
    EV_MESSAGE,
    MAX_TEXT_CHARS,
    NAMESPACE,
)


async def stored(server: Server, cid: str, token: str) -> list[dict[str, Any]]:
    return list((await server.expect("GET", f"/conversations/{cid}/events", token))["events"])


def code(ack: dict[str, Any]) -> str:
    assert ack["ok"] is False, f"expected a refusal, got {ack}"
    assert ack["error"]["message"], "every error says what went wrong"
    return str(ack["error"]["code"])


async def test_agents_and_customers_see_only_their_own(server: Server) -> None:
    bot_a, bot_b = await server.bot(), await server.bot()
    agent_a = await server.agent(bot_a)
    cid_b, customer_b = await server.conversation(bot_b)
    cid_a, customer_a = await server.conversation(bot_a)
    agent_a_c = await server.client(agent_a.token)
    await server.escalate(bot_b, cid_b, transcript=[{"role": "customer", "text": "secret of B"}])
    await server.escalate(bot_a, cid_a)
    await agent_a_c.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid_a)
    assert agent_a_c.events(EV_ESCALATION, cid_b) == []  # never told about B's escalation

    before = await stored(server, cid_b, customer_b)
    for event, payload in [("join", {"conversation_id": cid_b}), ("claim", {"conversation_id": cid_b}),
                           ("resume", {"conversation_id": cid_b, "after_seq": 0}),
                           ("message", {"conversation_id": cid_b, "client_id": "x", "text": "hi"}),
                           ("typing", {"conversation_id": cid_b, "state": "start"}),
                           ("hand_back", {"conversation_id": cid_b}), ("resolve", {"conversation_id": cid_b})]:
        assert code(await agent_a_c.call(event, payload)) == ERR_FORBIDDEN, event
    status, body = await server.request("GET", f"/conversations/{cid_b}/events", agent_a.token)
    assert status == 403 and body["error"]["code"] == ERR_FORBIDDEN
    assert (await server.expect("GET", "/conversations?status=waiting", agent_a.token))["conversations"][0][
        "conversation_id"] == cid_a  # B's waiting conversation is not in A's queue
    assert len((await server.expect("GET", "/conversations", agent_a.token))["conversations"]) == 1

    # A customer reaches only its own conversation.
    cust_a = await server.client(customer_a)
    for event, payload in [("join", {"conversation_id": cid_b}),
                           ("message", {"conversation_id": cid_b, "client_id": "x", "text": "hi"}),
                           ("resume", {"conversation_id": cid_b, "after_seq": 0})]:
        assert code(await cust_a.call(event, payload)) == ERR_FORBIDDEN, event
    status, _ = await server.request("GET", f"/conversations/{cid_b}/events", customer_a)
    assert status == 403
    # A bot reaches only its own conversations.
    bot_a_c = await server.client(bot_a.api_key)
    assert code(await bot_a_c.call("escalate", {"conversation_id": cid_b})) == ERR_FORBIDDEN
    status, body = await server.request("POST", f"/bots/{bot_b.bot_id}/conversations", bot_a.api_key, json={})
    assert status == 403 and body["error"]["code"] == ERR_FORBIDDEN
    assert await stored(server, cid_b, customer_b) == before  # nothing changed


async def test_connect_needs_a_known_token(server: Server) -> None:
    for auth in (None, {"token": "not-a-real-token"}, {"token": 42}, "just-a-string"):
        sio = socketio.AsyncClient(reconnection=False)
        reasons: list[Any] = []
        sio.on("connect_error", lambda data, r=reasons: r.append(data), namespace=NAMESPACE)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(server.url, auth=auth, namespaces=[NAMESPACE], transports=["websocket"],
                              wait_timeout=5)
        await sio.shutdown()
        assert reasons and "unauthorized" in reasons[0]["message"], reasons
        assert reasons[0]["data"]["code"] == ERR_UNAUTHORIZED
    # The admin key is for HTTP admin endpoints only.
    with pytest.raises(socketio.exceptions.ConnectionError):
        await Client(server.url, ADMIN_KEY).connect()


async def test_every_error_code_and_nothing_changes(server: Server) -> None:
    bot = await server.bot()
    alice, bob = await server.agent(bot, name="Alice"), await server.agent(bot, name="Bob")
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    bot_c = await server.client(bot.api_key)
    alice_c, bob_c = await server.client(alice.token), await server.client(bob.token)
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})
    before = await stored(server, cid, customer_token)

    invalid = [
        ("message", "not an object"), ("message", ["a", "list"]), ("message", None),
        ("message", {"conversation_id": cid, "text": "no client id"}),
        ("message", {"conversation_id": cid, "client_id": "c2", "text": ""}),
        ("message", {"conversation_id": cid, "client_id": "c2", "text": 42}),
        ("message", {"conversation_id": cid, "client_id": "c2", "text": "hi", "extra": True}),
        ("message", {"conversation_id": cid, "client_id": "c2", "text": "hi", "label": "customers_have_none"}),
        ("message", {"conversation_id": "../etc/passwd", "client_id": "c2", "text": "hi"}),
        ("typing", {"conversation_id": cid, "state": "maybe"}),
        ("resume", {"conversation_id": cid, "after_seq": -1}),
        ("resume", {"conversation_id": cid, "after_seq": "3"}),
        ("no_such_event", {"conversation_id": cid}),
    ]
    for event, payload in invalid:
        assert code(await customer.call(event, payload)) == ERR_INVALID_PAYLOAD, (event, payload)
    assert code(await bot_c.call("message", {"conversation_id": cid, "client_id": "b", "text": "x",
                                             "label": "has space"})) == ERR_INVALID_PAYLOAD
    # An event without any payload at all.
    assert code(await customer.sio.call("join", namespace=NAMESPACE, timeout=5)) == ERR_INVALID_PAYLOAD

    assert code(await customer.call("join", {"conversation_id": "no-such-conversation"})) == ERR_NOT_FOUND
    assert code(await customer.call("claim", {"conversation_id": cid})) == ERR_FORBIDDEN  # customers don't claim
    assert code(await customer.call("escalate", {"conversation_id": cid})) == ERR_FORBIDDEN
    assert code(await bot_c.call("typing", {"conversation_id": cid, "state": "start"})) == ERR_FORBIDDEN
    assert code(await alice_c.call("claim", {"conversation_id": cid})) == ERR_INVALID_TRANSITION  # not waiting
    assert code(await alice_c.call("hand_back", {"conversation_id": cid})) == ERR_FORBIDDEN  # never held it
    assert code(await customer.call("message", {"conversation_id": cid, "client_id": "big",
                                                "text": "x" * (MAX_TEXT_CHARS + 1)})) == ERR_TOO_LARGE
    assert await stored(server, cid, customer_token) == before  # none of the above changed anything

    await bot_c.ok("escalate", {"conversation_id": cid})
    assert code(await bot_c.call("escalate", {"conversation_id": cid})) == ERR_INVALID_TRANSITION
    await alice_c.ok("claim", {"conversation_id": cid})
    lost = await bob_c.call("claim", {"conversation_id": cid})
    assert code(lost) == ERR_ALREADY_CLAIMED and lost["error"]["claimed_by"] == {"agent_id": alice.agent_id,
                                                                               "name": "Alice"}
    assert code(await bot_c.call("resolve", {"conversation_id": cid})) == ERR_INVALID_TRANSITION
    assert code(await bot_c.call("message", {"conversation_id": cid, "client_id": "b9", "text": "x"})
                ) == ERR_INVALID_TRANSITION
    assert code(await alice_c.call("suggestion_feedback", {"conversation_id": cid, "suggestion_id": "nope",
                                                           "action": "sent"})) == ERR_NOT_FOUND
    assert code(await alice_c.call("suggestion_feedback", {"conversation_id": cid, "suggestion_id": "nope",
                                                           "action": "loved"})) == ERR_INVALID_PAYLOAD
    await alice_c.ok("hand_back", {"conversation_id": cid})
    assert code(await alice_c.call("hand_back", {"conversation_id": cid})) == ERR_INVALID_TRANSITION  # held before
    assert code(await alice_c.call("message", {"conversation_id": cid, "client_id": "late", "text": "x"})
                ) == ERR_INVALID_TRANSITION
    kinds = [e["kind"] for e in await stored(server, cid, customer_token)]
    assert kinds == ["message", "escalated", "claimed", "handed_back"]


# The python-socketio *client* posts a polling frame as raw bytes, which aiohttp warns about for large bodies.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_megabyte_and_a_half_message_gets_too_large_not_a_disconnect(server: Server, transport: str) -> None:
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token, transports=[transport])
    ack = await customer.call("message", {"conversation_id": cid, "client_id": "huge", "text": "x" * 1_500_000})
    assert code(ack) == ERR_TOO_LARGE and ack["error"]["limit"] == MAX_TEXT_CHARS
    assert customer.sio.connected
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "small", "text": "ok"}))["seq"] == 1


async def test_http_errors_are_json_with_the_right_status(server: Server) -> None:
    bot = await server.bot()
    cases: list[tuple[str, str, str | None, dict[str, Any], int, str]] = [
        ("POST", "/bots", None, {"json": {"bot_id": "x", "name": "x"}}, 401, ERR_UNAUTHORIZED),
        ("POST", "/bots", "wrong-key", {"json": {"bot_id": "x", "name": "x"}}, 401, ERR_UNAUTHORIZED),
        ("POST", "/bots", bot.api_key, {"json": {"bot_id": "x", "name": "x"}}, 403, ERR_FORBIDDEN),
        ("POST", "/bots", ADMIN_KEY, {"data": b"{not json"}, 400, ERR_INVALID_PAYLOAD),
        ("POST", "/bots", ADMIN_KEY, {"json": {"bot_id": "bad id!", "name": "x"}}, 400, ERR_INVALID_PAYLOAD),
        ("POST", "/bots", ADMIN_KEY, {"json": {"bot_id": bot.bot_id, "name": "again"}}, 409, ERR_CONFLICT),
        ("POST", "/agents", ADMIN_KEY, {"json": {"agent_id": "a1", "name": "A", "bots": ["no-such-bot"]}}, 400,
         ERR_INVALID_PAYLOAD),
        ("POST", "/bots/x/conversations", bot.api_key, {"json": {}}, 403, ERR_FORBIDDEN),
        ("POST", "/conversations/nope/escalate", bot.api_key, {"json": {}}, 404, ERR_NOT_FOUND),
        ("GET", "/conversations/nope/events", bot.api_key, {}, 404, ERR_NOT_FOUND),
        ("GET", "/conversations/x/events?after_seq=-2", bot.api_key, {}, 400, ERR_INVALID_PAYLOAD),
        ("GET", "/no/such/route", None, {}, 404, ERR_NOT_FOUND),
        ("POST", "/agents/me/devices", bot.api_key, {"json": {"kind": "fcm", "subscription": "t"}}, 403,
         ERR_FORBIDDEN),
        ("POST", "/bots", ADMIN_KEY, {"data": io.BytesIO(b"x" * 5_000_000)}, 413, ERR_TOO_LARGE),
    ]
    for method, path, token, kw, status, error in cases:
        got_status, body = await server.request(method, path, token, **kw)
        assert (got_status, body["error"]["code"]) == (status, error), (method, path, body)
        assert body["error"]["message"]
    cid, _ = await server.conversation(bot, conversation_id="fixed-id-" + bot.bot_id)
    status, body = await server.request("POST", f"/bots/{bot.bot_id}/conversations", bot.api_key,
                                        json={"conversation_id": cid})
    assert (status, body["error"]["code"]) == (409, ERR_CONFLICT)
    assert (await server.expect("GET", "/healthz")) == {"status": "ok"}


async def test_rate_limits(start_server: StartServer) -> None:
    server = await start_server(rate_limit_per_s=20.0, rate_limit_burst=20, http_rate_limit_per_s=5.0,
                                http_rate_limit_burst=5)
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    # 20 events per second pass (the protocol's floor) ...
    for i in range(20):
        await customer.ok("message", {"conversation_id": cid, "client_id": f"m{i}", "text": "hi"})
    # ... a flood beyond the burst is refused, with a hint when to retry, and refused events store nothing.
    acks = await asyncio.gather(*(customer.call("message", {"conversation_id": cid, "client_id": f"f{i}",
                                                             "text": "flood"}) for i in range(30)))
    limited = [a for a in acks if not a["ok"]]
    assert limited and all(a["error"]["code"] == ERR_RATE_LIMITED and a["error"]["retry_after_ms"] > 0
                           for a in limited)
    accepted = {a["seq"] for a in acks if a["ok"]}
    events = (await server.expect("GET", f"/conversations/{cid}/events", customer_token))["events"]
    assert len(events) == 20 + len(accepted)
    await asyncio.sleep(0.2)  # tokens come back at 20/s
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "later", "text": "calm"}))["seq"]
    statuses = [(await server.request("GET", f"/conversations/{cid}/events", customer_token))[0] for _ in range(10)]
    assert 200 in statuses and 429 in statuses


async def test_conversation_stream_goes_only_to_subscribers(server: Server) -> None:
    """A customer socket that never joined hears nothing; the bot does not hear agents."""
    bot = await server.bot()
    alice = await server.agent(bot)
    cid, customer_token = await server.conversation(bot)
    idle = await server.client(customer_token)  # connected, never joined
    customer = await server.client(customer_token)
    bot_c = await server.client(bot.api_key)
    await server.escalate(bot, cid)
    alice_c = await server.client(alice.token)
    await alice_c.ok("claim", {"conversation_id": cid})
    await customer.ok("join", {"conversation_id": cid})
    await alice_c.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "hello"})
    await customer.wait_for(EV_MESSAGE, lambda e: e["text"] == "hello")
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})
    await alice_c.wait_for(EV_MESSAGE, lambda e: e["text"] == "hi")
    await alice_c.ok("hand_back", {"conversation_id": cid})
    await bot_c.wait_for("handed_back")
    assert idle.events(EV_MESSAGE) == [] and bot_c.events(EV_MESSAGE) == []
