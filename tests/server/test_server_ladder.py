"""The unclaimed-escalation ladder with short test timings, on SQLite and PostgreSQL: the rungs fire in order
(the wait notice with the expected wait from recent times to claim, the reminder in-app and by push, the fallback
webhook through the durable outbox), a claim stops the ladder, and a real ``handoff serve`` killed between two rungs
resumes the ladder after its restart. Plus the per-bot ladder settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from handoff.clock import ManualClock
from handoff.ladder import LadderConfig, expected_wait
from handoff.pilot import load_pilot
from handoff.settings import Settings
from handoff.store import open_store
from handoff_testing import ADMIN_KEY, Bot, Server, StartServer, WebhookReceiver, parts, serve_process
from push_testing import LocalPushService

from copilot.live.protocol import EV_ESCALATION, EV_STATUS


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


async def set_ladder(server: Server, bot: Bot, **ladder: Any) -> dict[str, Any]:
    return await server.expect("PUT", f"/bots/{bot.bot_id}/ladder", bot.api_key, json=ladder)


async def escalation_row(server: Server, conversation_id: str) -> dict[str, Any]:
    async with parts(server).store.read() as tx:
        (row,) = await tx.escalations.of_conversation(conversation_id)
    return row


async def escalation_row_of(database_url: str, conversation_id: str) -> dict[str, Any]:
    """The escalation row as stored, read over a connection of the test's own (the server is another process)."""
    store = await open_store(database_url)
    try:
        async with store.read() as tx:
            (row,) = await tx.escalations.of_conversation(conversation_id)
        return row
    finally:
        await store.close()


def is_notice(conversation_id: str) -> Any:
    return lambda e: e["conversation_id"] == conversation_id and e.get("notice") == "expected_wait"


async def test_rungs_fire_in_order_with_the_expected_wait(start_server: StartServer, receiver: WebhookReceiver) -> None:
    clock = ManualClock()
    server = await start_server(clock=clock)
    push = await LocalPushService().start()
    try:
        bot = await server.bot()
        effective = await set_ladder(server, bot, wait_notice_after_s=0.3, renotify_after_s=0.7,
                                     fallback_after_s=1.1, fallback_webhook=receiver.url)
        assert effective["effective"] == {"wait_notice_after_s": 0.3, "renotify_after_s": 0.7,
                                          "fallback_after_s": 1.1, "fallback_webhook": receiver.url}
        alice = await server.agent(bot, name="Alice")
        push.server_key_b64 = (await server.expect("GET", "/push/vapid-public-key"))["public_key"]
        await server.expect("POST", "/agents/me/devices", alice.token,
                            json={"kind": "webpush", "subscription": push.subscribe().json()})
        agent = await server.client(alice.token)

        # History: an earlier escalation of this bot, claimed 0.6 s later.
        earlier, _ = await server.conversation(bot)
        await server.escalate(bot, earlier)
        clock.advance(0.6)
        await clock.settle()
        await agent.ok("claim", {"conversation_id": earlier})
        row = await escalation_row(server, earlier)
        took = row["claimed_at"] - row["escalated_at"]
        assert took == pytest.approx(0.6)
        earlier_rungs = Counter(rung for _, rung in json.loads(row["plan"])[: row["next_rung"]])

        cid, customer_token = await server.conversation(bot)
        customer = await server.client(customer_token)
        bot_c = await server.client(bot.api_key)
        await customer.ok("join", {"conversation_id": cid})
        await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "anyone there?"}])

        # Each rung at its time and not before, in order.
        clock.advance(0.29)
        await clock.settle()
        assert [e for e in customer.events(EV_STATUS, cid) if e.get("notice")] == []
        clock.advance(0.01)
        notice = await customer.wait_for(EV_STATUS, is_notice(cid))
        assert notice["status"] == "waiting" and "seq" not in notice  # a notice, not a stored change
        assert notice["waited_s"] == 0.3 and notice["expected_wait_s"] == round(took - 0.3, 1)
        assert (await bot_c.wait_for(EV_STATUS, is_notice(cid)))["expected_wait_s"] == notice["expected_wait_s"]

        clock.advance(0.39)
        await clock.settle()
        assert [e for e in agent.events(EV_ESCALATION, cid) if e["renotify"] > 0] == []
        clock.advance(0.01)
        reminder = await agent.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid and e["renotify"] == 1)
        assert reminder["preview"] == "anyone there?" and reminder["seq"] == 2
        pushes = await push.wait_for(2, lambda r: r.payload["data"]["conversation_id"] == cid)
        assert [p.payload["data"]["renotify"] for p in pushes] == ["0", "1"]
        assert pushes[1].payload["title"] == "Test bot: still waiting for an agent"

        clock.advance(0.39)
        await clock.settle()
        assert receiver.calls == []
        clock.advance(0.01)
        await clock.settle()  # the rung wrote the webhook; the deliverer, woken, posted it
        (body,) = receiver.bodies()
        assert body["event"] == "unclaimed" and body["conversation_id"] == cid and body["waited_s"] == 1.1
        assert body["preview"] == "anyone there?" and body["seq"] == 2

        row = await escalation_row(server, cid)
        assert row["next_rung"] == 3 and row["due_at"] is None and row["state"] == "waiting"
        metrics = parts(server).metrics.registry
        assert {r: metrics.get_sample_value("handoff_ladder_rungs_total", {"bot": bot.bot_id, "rung": r}) or 0
                for r in ("wait_notice", "renotify", "fallback")} == {
                    r: 1 + earlier_rungs[r] for r in ("wait_notice", "renotify", "fallback")}
    finally:
        await push.stop()


async def test_a_claim_during_the_ladder_stops_it(start_server: StartServer, receiver: WebhookReceiver) -> None:
    clock = ManualClock()
    server = await start_server(clock=clock)
    bot = await server.bot()
    await set_ladder(server, bot, wait_notice_after_s=0.3, renotify_after_s=0.3, fallback_after_s=0.6,
                     fallback_webhook=receiver.url)
    alice = await server.agent(bot)
    agent = await server.client(alice.token)
    claimed, claimed_token = await server.conversation(bot)
    control, control_token = await server.conversation(bot)  # the same ladder, never claimed
    customers = [await server.client(t) for t in (claimed_token, control_token)]
    for c, cid in zip(customers, (claimed, control), strict=True):
        await c.ok("join", {"conversation_id": cid})
    await server.escalate(bot, claimed)
    await server.escalate(bot, control)
    await agent.ok("claim", {"conversation_id": claimed})
    row = await escalation_row(server, claimed)
    assert row["state"] == "claimed" and row["due_at"] is None and row["next_rung"] == 0

    # Once the control conversation's last rung has fired, every rung of the claimed one would have too.
    clock.advance(0.3)
    await clock.settle()
    clock.advance(0.3)
    await clock.settle()
    await customers[1].wait_for(EV_STATUS, is_notice(control))
    await agent.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == control and e["renotify"] == 1)
    assert [b["conversation_id"] for b in receiver.bodies()] == [control]
    assert [e for e in agent.events(EV_ESCALATION, claimed) if e["renotify"] > 0] == []
    assert [e for e in customers[0].events(EV_STATUS, claimed) if e.get("notice")] == []
    assert (await escalation_row(server, claimed))["next_rung"] == 0


@pytest.mark.slow
async def test_the_ladder_survives_a_restart_between_two_rungs(database_url: str, receiver: WebhookReceiver) -> None:
    env = {"HANDOFF_WEBHOOK_POLL_S": "0.2", "HANDOFF_LADDER_POLL_S": "0.2"}
    first = serve_process(database_url, env=env)
    second = None
    try:
        async with aiohttp.ClientSession() as http:
            server = Server(first.url, None, http)
            bot = await server.bot()
            await set_ladder(server, bot, renotify_after_s=0.3, wait_notice_after_s=None, fallback_after_s=2.5,
                             fallback_webhook=receiver.url)
            alice = await server.agent(bot)
            agent = await server.client(alice.token)
            cid, _ = await server.conversation(bot)
            await server.escalate(bot, cid)
            await agent.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid and e["renotify"] == 1)
            first.kill()  # SIGKILL between the reminder and the fallback
            await server.close_clients()
            assert receiver.calls == []

            second = serve_process(database_url, env=env)
            server.url = second.url
            agent = await server.client(alice.token)
            await asyncio.wait_for(receiver.received.wait(), 15)
            (body,) = receiver.bodies()
            assert body["event"] == "unclaimed" and body["conversation_id"] == cid and body["waited_s"] >= 2.5
            # The reminder that fired before the crash is not repeated; nothing fires after the last rung.
            row = await escalation_row_of(database_url, cid)
            assert row["next_rung"] == 2 and row["due_at"] is None
            assert agent.events(EV_ESCALATION, cid) == [] and len(receiver.calls) == 1
            await server.close_clients()
            assert second.stop() == 0
    finally:
        for process in (first, second):
            if process is not None and process.proc.poll() is None:
                process.kill()


async def test_ladder_settings_per_bot(server: Server) -> None:
    default = {"renotify_after_s": 120.0, "wait_notice_after_s": 60.0, "fallback_after_s": 300.0,
               "fallback_webhook": None}
    made = await server.expect("POST", "/bots", ADMIN_KEY, json={
        "bot_id": "laddered-" + str(time.time_ns()), "name": "L",
        "ladder": {"renotify_after_s": 30, "fallback_webhook": "https://pager.example/hook"}})
    bot = Bot(made["bot_id"], made["api_key"])
    got = await server.expect("GET", f"/bots/{bot.bot_id}/ladder", bot.api_key)
    assert got["ladder"] == {"renotify_after_s": 30.0, "fallback_webhook": "https://pager.example/hook"}
    assert got["effective"] == {**default, "renotify_after_s": 30.0, "fallback_webhook": "https://pager.example/hook"}
    off = await server.expect("PUT", f"/bots/{bot.bot_id}/ladder", ADMIN_KEY, json={"renotify_after_s": None})
    assert off["effective"] == {**default, "renotify_after_s": None}
    assert (await server.expect("PUT", f"/bots/{bot.bot_id}/ladder", bot.api_key, json={}))["effective"] == default

    other = await server.bot()
    agent = await server.agent(bot)
    for token, status in ((other.api_key, 403), (agent.token, 403), ("nonsense", 401)):
        code, _ = await server.request("GET", f"/bots/{bot.bot_id}/ladder", token)
        assert code == status
    for bad in ({"renotify_after_s": -1}, {"renotify_after_s": "soon"}, {"fallback_webhook": "ftp://x"},
                {"renotify_after_s": 10, "typo_s": 5}, [1, 2], {"fallback_after_s": True}):
        code, body = await server.request("PUT", f"/bots/{bot.bot_id}/ladder", bot.api_key, json=bad)
        assert code == 400 and body["error"]["code"] == "invalid_payload", bad
    assert (await server.expect("GET", f"/bots/{bot.bot_id}/ladder", bot.api_key))["ladder"] is None  # unchanged
    code, _ = await server.request("PUT", "/bots/no-such-bot/ladder", ADMIN_KEY, json={})
    assert code == 404

    # An escalation stores its plan from the ladder in force, in firing order.
    await server.expect("PUT", f"/bots/{bot.bot_id}/ladder", bot.api_key,
                        json={"renotify_after_s": 50, "wait_notice_after_s": 10, "fallback_after_s": None})
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid)
    row = await escalation_row(server, cid)
    plan = json.loads(row["plan"])
    assert [rung for _, rung in plan] == ["wait_notice", "renotify"]
    assert [round(at - row["escalated_at"], 3) for at, _ in plan] == [10.0, 50.0] and row["due_at"] == plan[0][0]


def test_expected_wait_from_recent_times_to_claim() -> None:
    samples = [10.0, 20.0, 30.0, 40.0, 300.0]
    assert expected_wait(samples, 0.0) == 30.0  # nobody waited yet: the median wait
    assert expected_wait(samples, 25.0) == 15.0  # of those that took longer than 25 s: 5, 15, 275 more
    assert expected_wait(samples, 100.0) == 200.0
    assert expected_wait(samples, 400.0) is None  # longer than anyone recently: nothing honest to say
    assert expected_wait([], 5.0) is None


def test_ladder_plan_and_the_pilot_file(tmp_path: Path) -> None:
    defaults = LadderConfig.defaults(Settings(ladder_renotify_after_s=60, ladder_wait_notice_after_s=60,
                                              ladder_fallback_after_s=120))
    assert defaults.plan(1000.0) == [(1060.0, "renotify"), (1060.0, "wait_notice")]  # no webhook: no fallback
    own = defaults.merged({"fallback_webhook": "https://x.example/h", "renotify_after_s": None})
    assert own.plan(0.0) == [(60.0, "wait_notice"), (120.0, "fallback")]
    pilot = tmp_path / "pilot.toml"
    pilot.write_text('[[bots]]\nbot_id = "b"\nname = "B"\napi_key = "' + "k" * 30 + '"\n'
                     '[bots.ladder]\nrenotify_after_s = 45\nfallback_webhook = "https://pager.example/h"\n')
    assert load_pilot(pilot).bots[0].bot.ladder == {"renotify_after_s": 45.0,
                                                    "fallback_webhook": "https://pager.example/h"}
