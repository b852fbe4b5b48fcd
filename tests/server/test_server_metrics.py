"""Handoff metrics at GET /metrics, read as Prometheus reads them, change as a scripted conversation runs; each
app has its own registry, so two servers in one process never mix their numbers."""

from __future__ import annotations

from typing import Any

from handoff_testing import Server, StartServer
from prometheus_client.parser import text_string_to_metric_families
from push_testing import LocalPushService

from copilot.live.protocol import EV_ESCALATION, EV_MESSAGE


async def scrape(server: Server, token: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser: {(name, labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with server.http.get(server.url + "/metrics", headers=headers) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Watch:
    """Metrics before and after a step: ``delta(name, **labels)``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before: dict[Any, float] = {}
        self.after: dict[Any, float] = {}

    async def step(self) -> Watch:
        self.before = self.after or await scrape(self.server)
        self.after = await scrape(self.server)
        return self

    def delta(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)

    def now(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels)


async def test_metrics_follow_a_scripted_conversation(start_server: StartServer) -> None:
    push = await LocalPushService().start()
    try:
        server = await start_server()
        bystander = await start_server()  # another app in this process: its registry stays its own
        bot = await server.bot()
        b = bot.bot_id
        alice, bob = await server.agent(bot, name="Alice"), await server.agent(bot, name="Bob")
        push.server_key_b64 = (await server.expect("GET", "/push/vapid-public-key"))["public_key"]
        await server.expect("POST", "/agents/me/devices", alice.token,
                            json={"kind": "webpush", "subscription": push.subscribe().json()})
        watch = Watch(server)
        await watch.step()
        assert watch.now("handoff_escalations_total", bot=b) == 0

        cid, customer_token = await server.conversation(bot)
        customer = await server.client(customer_token)
        bot_c = await server.client(bot.api_key)
        alice_c, bob_c = await server.client(alice.token), await server.client(bob.token)
        await watch.step()
        assert (watch.now("handoff_connected_sockets", role="agent"), watch.now("handoff_connected_sockets",
                role="customer"), watch.now("handoff_connected_sockets", role="bot")) == (2, 1, 1)

        await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})
        await bot_c.ok("message", {"conversation_id": cid, "client_id": "b1", "text": "hello, how can I help?"})
        await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hi"})  # a resend
        await watch.step()
        assert watch.delta("handoff_messages_relayed_total", bot=b, role="customer") == 1
        assert watch.delta("handoff_messages_relayed_total", bot=b, role="bot") == 1

        await bot_c.ok("escalate", {"conversation_id": cid})
        await alice_c.wait_for(EV_ESCALATION)
        await push.wait_for(1)
        await watch.step()
        assert watch.delta("handoff_escalations_total", bot=b) == 1
        # The push is counted once its outcome is known (right after the push service answered).
        for _ in range(100):
            if (await watch.step()).now("handoff_pushes_sent_total", kind="webpush") == 1:
                break
        assert watch.now("handoff_pushes_sent_total", kind="webpush") == 1

        await alice_c.ok("claim", {"conversation_id": cid})
        lost = await bob_c.call("claim", {"conversation_id": cid})
        assert lost["error"]["code"] == "already_claimed"
        await watch.step()
        assert watch.delta("handoff_claims_total", bot=b) == 1
        assert watch.delta("handoff_claim_races_lost_total", bot=b) == 1
        assert watch.delta("handoff_time_to_claim_seconds_count", bot=b) == 1
        assert 0 < watch.delta("handoff_time_to_claim_seconds_sum", bot=b) < 60

        await customer.ok("message", {"conversation_id": cid, "client_id": "c2", "text": "still there?"})
        await alice_c.ok("message", {"conversation_id": cid, "client_id": "a1", "text": "yes, looking now"})
        await alice_c.ok("message", {"conversation_id": cid, "client_id": "a2", "text": "done"})
        await customer.wait_for(EV_MESSAGE, lambda e: e["client_id"] == "a2")
        await watch.step()
        assert watch.delta("handoff_messages_relayed_total", bot=b, role="agent") == 2
        assert watch.delta("handoff_time_to_first_reply_seconds_count", bot=b) == 1  # the first reply only
        assert watch.now("handoff_time_to_first_reply_seconds_sum", bot=b) >= \
            watch.now("handoff_time_to_claim_seconds_sum", bot=b)

        await alice_c.ok("hand_back", {"conversation_id": cid, "note": "back to you"})
        await bot_c.ok("resolve", {"conversation_id": cid})
        await customer.ok("message", {"conversation_id": cid, "client_id": "c3", "text": "one more thing"})
        await watch.step()
        assert (watch.delta("handoff_hand_backs_total", bot=b), watch.delta("handoff_resolutions_total", bot=b),
                watch.delta("handoff_reopenings_total", bot=b)) == (1, 1, 1)

        await bob_c.close()
        await watch.step()
        assert watch.delta("handoff_connected_sockets", role="agent") == -1

        others = await scrape(bystander)
        assert value(others, "handoff_escalations_total", bot=b) == 0
        assert value(others, "handoff_messages_relayed_total", bot=b, role="customer") == 0
    finally:
        await push.stop()


async def test_metrics_token_guards_the_endpoint(start_server: StartServer) -> None:
    server = await start_server(metrics_token="scrape-secret-0123456789")
    async with server.http.get(server.url + "/metrics") as response:
        assert response.status == 401
    async with server.http.get(server.url + "/metrics", headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    assert value(await scrape(server, "scrape-secret-0123456789"), "handoff_connected_sockets", role="agent") == 0
