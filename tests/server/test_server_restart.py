"""A restart loses nothing: a real ``handoff serve`` process is killed with SIGKILL while clients write,
then started again on the same database. Every acknowledged event is there, credentials still work, the seq goes
on, a resent client_id keeps its seq, and a hand-back webhook that could not be delivered before is delivered by the
new process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
import socketio
from handoff_testing import Server, WebhookReceiver, serve_process

from copilot.live.protocol import EV_MESSAGE


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.slow
async def test_kill_and_restart_loses_nothing(database_url: str, http: aiohttp.ClientSession) -> None:
    receiver = await WebhookReceiver(fail_first=10_000).start()  # down for the first process
    env = {"HANDOFF_WEBHOOK_BACKOFF_S": "0.2", "HANDOFF_WEBHOOK_BACKOFF_MAX_S": "0.5", "HANDOFF_WEBHOOK_POLL_S": "0.2",
           "HANDOFF_WEBHOOK_TIMEOUT_S": "2"}  # a kill during an attempt leaves a 7 s lease on the row
    first = serve_process(database_url, env=env)
    second = None
    try:
        server = Server(first.url, None, http)
        bot = await server.bot(webhook=receiver.url)
        alice = await server.agent(bot, name="Alice")
        cid, customer_token = await server.conversation(bot)
        await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "hello"},
                                                    {"role": "bot", "text": "hi, one moment"}])
        agent = await server.client(alice.token)
        customer = await server.client(customer_token)
        await agent.ok("claim", {"conversation_id": cid})
        for i in range(5):
            await customer.ok("message", {"conversation_id": cid, "client_id": f"c{i}", "text": f"customer {i}"})
            await agent.ok("message", {"conversation_id": cid, "client_id": f"a{i}", "text": f"agent {i}"})
        await agent.ok("hand_back", {"conversation_id": cid, "note": "over to you"})
        # The first process tries (and fails) at least once before it dies.
        await asyncio.wait_for(receiver.attempted.wait(), 5)
        assert receiver.calls

        # Clients keep writing while the process is killed: what was acknowledged must survive.
        acked: dict[int, str] = {}
        enough = asyncio.Event()

        async def keep_writing() -> None:
            i = 0
            with contextlib.suppress(socketio.exceptions.SocketIOError, AssertionError, TimeoutError):
                while True:
                    text = f"during {i}"
                    ack = await customer.call("message", {"conversation_id": cid, "client_id": f"d{i}",
                                                          "text": text}, wait_s=2.0)
                    if ack.get("ok"):
                        acked[ack["seq"]] = text
                        if len(acked) >= 20:
                            enough.set()
                    i += 1

        writer = asyncio.ensure_future(keep_writing())
        await asyncio.wait_for(enough.wait(), 30)
        first.kill()
        await writer
        await server.close_clients()
        before = max(acked)

        receiver.fail_first = 0  # the bot's endpoint is back
        second = serve_process(database_url, env=env)
        server.url = second.url
        events = (await server.expect("GET", f"/conversations/{cid}/events", customer_token))["events"]
        stored = {e["seq"]: e for e in events}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
        for seq, text in acked.items():
            assert stored[seq]["text"] == text, f"acknowledged seq {seq} lost or changed"
        kinds = [e["kind"] for e in events]
        assert kinds[:4] == ["message", "message", "escalated", "claimed"] and "handed_back" in kinds

        # The same tokens work; the seq goes on; a resend of an acknowledged message keeps its seq.
        customer = await server.client(customer_token)
        resent_seq, resent_text = next(iter(acked.items()))
        index = resent_text.split()[-1]
        again = await customer.ok("message", {"conversation_id": cid, "client_id": f"d{index}", "text": resent_text})
        assert again["seq"] == resent_seq
        bot_c = await server.client(bot.api_key)
        new = await customer.ok("message", {"conversation_id": cid, "client_id": "after", "text": "after restart"})
        assert new["seq"] == len(events) + 1 and new["seq"] > before
        assert (await bot_c.wait_for(EV_MESSAGE, lambda e: e["seq"] == new["seq"]))["text"] == "after restart"
        agent = await server.client(alice.token)
        resumed = await agent.ok("resume", {"conversation_id": cid, "after_seq": before})
        assert [e["seq"] for e in resumed["events"]] == list(range(before + 1, new["seq"] + 1))

        # The webhook that failed before the crash is delivered by the new process, with the right turns.
        await asyncio.wait_for(receiver.received.wait(), 25)
        body = receiver.bodies()[-1]
        assert body["conversation_id"] == cid and body["note"] == "over to you"
        assert [t["text"] for t in body["turns"]] == [t for i in range(5) for t in (f"customer {i}", f"agent {i}")]
        await server.close_clients()
        assert second.stop() == 0  # SIGTERM: a clean stop
    finally:
        for process in (first, second):
            if process is not None and process.proc.poll() is None:
                process.kill()
        await receiver.stop()
