"""First claim wins: 50 agents claim one waiting conversation at once, 100 times, through the real server; and
the compare-and-set itself, with claims racing on separate database connections (no lock of this process between
them), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from handoff.states import Status
from handoff.store import Tx, open_store
from handoff_testing import Server, uid

from copilot.live.protocol import ERR_ALREADY_CLAIMED, EV_CLAIMED, EV_ESCALATION

AGENTS = 50
ROUNDS = 100


@pytest.mark.slow
async def test_fifty_agents_claim_at_once_a_hundred_times(server: Server) -> None:
    bot = await server.bot()
    agents = [await server.agent(bot, name=f"Agent {i:02d}") for i in range(AGENTS)]
    sockets = await asyncio.gather(*(server.client(a.token) for a in agents))
    wins = [0] * AGENTS
    for _ in range(ROUNDS):
        cid, _ = await server.conversation(bot)
        await server.escalate(bot, cid, reason="race")
        # Every agent is notified before the race starts, like agents tapping the same notification.
        await asyncio.gather(*(s.wait_for(EV_ESCALATION, lambda e, c=cid: e["conversation_id"] == c)
                               for s in sockets))
        acks = await asyncio.gather(*(s.call("claim", {"conversation_id": cid}) for s in sockets))
        winners = [i for i, ack in enumerate(acks) if ack["ok"]]
        assert len(winners) == 1, f"{len(winners)} winners for {cid}"
        (w,) = winners
        wins[w] += 1
        winner = agents[w]
        losers = [ack for ack in acks if not ack["ok"]]
        assert len(losers) == AGENTS - 1
        for ack in losers:
            assert ack["error"]["code"] == ERR_ALREADY_CLAIMED
            assert ack["error"]["claimed_by"] == {"agent_id": winner.agent_id, "name": winner.name}
            assert ack["error"]["message"] == f"claimed by {winner.name}"
        # Every other agent's queue view hears who took it.
        for i, s in enumerate(sockets):
            if i != w:
                got = await s.wait_for(EV_CLAIMED, lambda e, c=cid: e["conversation_id"] == c)
                assert got["agent_id"] == winner.agent_id and got["agent_name"] == winner.name
        transcript = acks[w]["transcript"]
        assert [e["kind"] for e in transcript] == ["escalated", "claimed"]
    assert sum(wins) == ROUNDS
    # Exactly one claimed event per conversation was stored, whoever won.
    queue = await server.expect("GET", "/conversations?status=claimed", agents[0].token)
    assert len(queue["conversations"]) == ROUNDS
    assert sorted({c["agent_id"] for c in queue["conversations"]}) == sorted(
        a.agent_id for a, n in zip(agents, wins, strict=True) if n)


async def test_compare_and_set_on_separate_connections(database_url: str) -> None:
    """The database alone decides: 20 engines (20 connections, no shared lock) claim the same row at once."""
    stores = [await open_store(database_url, sqlite_synchronous="NORMAL") for _ in range(20)]
    try:
        bot_id, cid = uid("bot"), uuid.uuid4().hex

        async def setup(tx: Tx) -> None:
            await tx.bots.insert(bot_id, "bot", None)
            await tx.conversations.insert(cid, bot_id, "waiting", "customer", None)

        await stores[0].write(setup)
        start = asyncio.Event()

        async def claim(i: int) -> int | None:
            async def op(tx: Tx) -> int | None:
                seen = await tx.conversations.get(cid)
                assert seen is not None
                return await tx.conversations.claim(seen, f"agent-{i}", Status.CLAIMED)

            await start.wait()
            return await stores[i].write(op)

        tasks = [asyncio.ensure_future(claim(i)) for i in range(len(stores))]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
        won = [i for i, seq in enumerate(results) if seq is not None]
        assert len(won) == 1 and results[won[0]] == 1
        async with stores[0].read() as tx:
            conv = await tx.conversations.get(cid)
        assert conv is not None and conv.status == "claimed" and conv.agent_id == f"agent-{won[0]}"
        assert conv.last_seq == 1
    finally:
        for store in stores:
            await store.close()
