"""Inputs that once slipped past the protocol's checks, against the real server on SQLite and PostgreSQL: client
events named like the transport's own (``connect``, ``disconnect``), sequence numbers beyond what a column holds,
texts that are not valid Unicode, and bodies not in their declared encoding. Each gets a clear error (or an empty
answer) and changes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from handoff_testing import Server, parts

from copilot.live.protocol import ERR_FORBIDDEN, ERR_INVALID_PAYLOAD


def sockets(server: Server, role: str) -> float:
    return parts(server).metrics.registry.get_sample_value("handoff_connected_sockets", {"role": role}) or 0.0


async def stored(server: Server, conversation_id: str) -> list[dict[str, Any]]:
    async with parts(server).store.read() as tx:
        return await tx.events.after(conversation_id, 0)


async def test_events_named_like_the_transport_s_own_are_refused(server: Server) -> None:
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    before = sockets(server, "customer")
    assert before >= 1
    for event, payload in (("disconnect", {}), ("connect", ({}, {"token": bot.api_key})),
                           ("connect", {"token": bot.api_key})):
        ack = await customer.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == ERR_INVALID_PAYLOAD, (event, ack)
    # The socket is still connected as the customer it was: not the bot, not logged out, still counted.
    assert sockets(server, "customer") == before
    assert (await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "still me"}))["seq"] == 1
    escalated = await customer.call("escalate", {"conversation_id": cid})
    assert escalated["error"]["code"] == ERR_FORBIDDEN  # a customer cannot escalate: it did not become the bot
    assert [e["kind"] for e in await stored(server, cid)] == ["message"]


async def test_sequence_numbers_beyond_a_column_or_json_s_range(server: Server) -> None:
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})
    for after in (2**31 - 1, 2**31, 2**53):
        assert (await customer.ok("resume", {"conversation_id": cid, "after_seq": after}))["events"] == []
        got = await server.expect("GET", f"/conversations/{cid}/events?after_seq={after}", customer_token)
        assert got == {"events": []}
    for after in (2**53 + 1, 2**63, -1):
        ack = await customer.call("resume", {"conversation_id": cid, "after_seq": after})
        assert ack["error"]["code"] == ERR_INVALID_PAYLOAD, after
    for raw in (str(2**53 + 1), "9" * 40, "١٢"):  # the last: Arabic-Indic digits, which str.isdigit accepts
        status, body = await server.request("GET", f"/conversations/{cid}/events?after_seq={raw}", customer_token)
        assert status == 400 and body["error"]["code"] == ERR_INVALID_PAYLOAD, raw


async def test_texts_with_a_lone_surrogate_are_invalid_payloads(server: Server) -> None:
    bot = await server.bot()
    cid, customer_token = await server.conversation(bot)
    customer = await server.client(customer_token)
    ack = await customer.call("message", {"conversation_id": cid, "client_id": "c1", "text": "x\ud800"})
    assert ack["error"]["code"] == ERR_INVALID_PAYLOAD
    status, body = await server.request(
        "POST", f"/conversations/{cid}/escalate", bot.api_key,
        data='{"transcript": [{"role": "customer", "text": "x\\ud800"}]}')
    assert status == 400 and body["error"]["code"] == ERR_INVALID_PAYLOAD
    assert await stored(server, cid) == []


async def test_a_bearer_token_that_is_not_text_is_unauthorized(server: Server) -> None:
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/v1/agents/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80abc\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and b'"unauthorized"' in body


async def raw_http(server: Server, request: bytes) -> tuple[bytes, bytes]:
    """Send one raw HTTP/1.1 request; the status line and headers, and the body."""
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def test_a_body_that_is_not_in_its_declared_encoding_is_an_invalid_payload(server: Server) -> None:
    bot = await server.bot()
    body = b'{"metadata": {}}'
    head, answer = await raw_http(server, (
        f"POST /api/v1/bots/{bot.bot_id}/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bot.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n").encode() + body)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(answer)["error"]["code"] == ERR_INVALID_PAYLOAD
    async with parts(server).store.read() as tx:
        assert await tx.conversations.of_bots([bot.bot_id], "bot", 10) == []  # nothing was created
    # the same body sent plainly is fine
    status, created = await server.request("POST", f"/bots/{bot.bot_id}/conversations", bot.api_key, json={})
    assert status == 200 and created["conversation_id"]

