"""Several processes: two real ``handoff serve`` processes share one PostgreSQL database and a Redis message
queue (HANDOFF_REDIS_URL). Agents connected to either process race for the same conversations: the database's
compare-and-set still lets exactly one win, and notifications, claims and messages cross between processes, to
every device of the agent holding a conversation."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from handoff_testing import ServeProcess, Server, serve_process

from copilot.live.protocol import ERR_ALREADY_CLAIMED, EV_CLAIMED, EV_ESCALATION, EV_MESSAGE

REDIS_URL = os.environ.get("HANDOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AGENTS = 50
ROUNDS = 20


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is unreachable at {REDIS_URL} ({exc}); set HANDOFF_TEST_REDIS_URL")
    return REDIS_URL


@pytest.fixture
def two_processes(postgres_url: str, redis_url: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    # A channel of its own: other test sessions (and other helpers' servers) may share this Redis.
    env = {"HANDOFF_REDIS_URL": redis_url, "HANDOFF_REDIS_CHANNEL": f"handoff-test-{uuid.uuid4().hex}"}
    first = serve_process(postgres_url, env=env)
    try:
        second = serve_process(postgres_url, env=env)
    except BaseException:
        first.kill()
        raise
    yield first, second
    for process in (first, second):
        if process.proc.poll() is None:
            process.stop()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_claim_race_across_two_server_processes(two_processes: tuple[ServeProcess, ServeProcess]) -> None:
    first, second = two_processes
    async with aiohttp.ClientSession() as http:
        a, b = Server(first.url, None, http), Server(second.url, None, http)
        try:
            bot = await a.bot()
            agents = [await a.agent(bot, name=f"Agent {i:02d}") for i in range(AGENTS)]
            # Half the agents on each process.
            sockets = await asyncio.gather(*((a if i % 2 else b).client(agent.token)
                                             for i, agent in enumerate(agents)))
            winners_by_process = {first.url: 0, second.url: 0}
            for round_ in range(ROUNDS):
                creator, escalator = (a, b) if round_ % 2 else (b, a)
                cid, customer_token = await creator.conversation(bot)
                await escalator.escalate(bot, cid, transcript=[{"role": "customer", "text": f"round {round_}"}])
                # The escalation reached every agent, whichever process holds its socket.
                await asyncio.gather(*(s.wait_for(EV_ESCALATION, lambda e, c=cid: e["conversation_id"] == c)
                                       for s in sockets))
                acks = await asyncio.gather(*(s.call("claim", {"conversation_id": cid}) for s in sockets))
                won = [i for i, ack in enumerate(acks) if ack["ok"]]
                assert len(won) == 1, f"round {round_}: {len(won)} winners"
                (w,) = won
                winners_by_process[sockets[w].url] += 1
                for ack in (ack for ack in acks if not ack["ok"]):
                    assert ack["error"]["code"] == ERR_ALREADY_CLAIMED
                    assert ack["error"]["claimed_by"]["agent_id"] == agents[w].agent_id
                for i, s in enumerate(sockets):
                    if i != w:
                        got = await s.wait_for(EV_CLAIMED, lambda e, c=cid: e["conversation_id"] == c)
                        assert got["agent_id"] == agents[w].agent_id
                # A customer on the other process reaches the winner.
                other = b if sockets[w].url == first.url else a
                customer = await other.client(customer_token)
                await customer.ok("message", {"conversation_id": cid, "client_id": "hello", "text": "across"})
                got = await sockets[w].wait_for(EV_MESSAGE, lambda e, c=cid: e["conversation_id"] == c)
                assert got["text"] == "across"
            assert sum(winners_by_process.values()) == ROUNDS
        finally:
            await a.close_clients()
            await b.close_clients()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_every_device_of_the_claiming_agent_hears_the_conversation_on_either_process(
        two_processes: tuple[ServeProcess, ServeProcess]) -> None:
    first, second = two_processes
    async with aiohttp.ClientSession() as http:
        a, b = Server(first.url, None, http), Server(second.url, None, http)
        try:
            bot = await a.bot()
            agent = await a.agent(bot)
            for claim_on, other in ((a, b), (b, a)):
                desk, phone = await claim_on.client(agent.token), await other.client(agent.token)
                cid, customer_token = await a.conversation(bot)
                await a.escalate(bot, cid)
                await desk.wait_for(EV_ESCALATION, lambda e, c=cid: e["conversation_id"] == c)
                await desk.ok("claim", {"conversation_id": cid})
                customer = await other.client(customer_token)
                for n in range(5):
                    await customer.ok("message", {"conversation_id": cid, "client_id": f"c{n}", "text": f"m{n}"})
                await customer.ok("typing", {"conversation_id": cid, "state": "start"})
                await desk.ok("tool_event", {"conversation_id": cid, "client_id": "t1", "name": "order_lookup",
                                             "request": {"order": "A-1"}, "result": {"items": []}})
                await desk.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "from the desk"})
                # The phone never claimed nor joined, and sits on the other process: it hears it all the same.
                for device in (desk, phone):
                    got = await device.wait_for(EV_MESSAGE, lambda e, c=cid: e["conversation_id"] == c
                                                and e["text"] == "m4")
                    assert got["seq"] > 0
                await phone.wait_for(EV_MESSAGE, lambda e, c=cid: e["conversation_id"] == c
                                     and e["text"] == "from the desk")
                texts = [e["text"] for e in phone.events(EV_MESSAGE) if e["conversation_id"] == cid]
                assert texts == ["m0", "m1", "m2", "m3", "m4", "from the desk"]
                await phone.wait_for("typing", lambda e, c=cid: e["conversation_id"] == c)
                await phone.wait_for("tool_event", lambda e, c=cid: e["conversation_id"] == c)
                # The customer's side never gets the lookup.
                assert customer.events("tool_event") == []
                # The phone may write too: it is the holder's.
                assert (await phone.ok("message", {"conversation_id": cid, "client_id": "p1", "text": "phone"}))
                await desk.wait_for(EV_MESSAGE, lambda e, c=cid: e["conversation_id"] == c and e["text"] == "phone")
        finally:
            await a.close_clients()
            await b.close_clients()
