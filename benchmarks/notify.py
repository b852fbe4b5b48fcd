"""Escalation to notification: 100 agents of one bot, each connected and each with a Web Push device.

In one run, on this machine, each part in its own process:
- a local Web Push service (tests/server/push_testing.py's LocalPushService: it verifies every VAPID JWT and
  decrypts every payload with the subscription's keys, as a browser vendor's service and the browser would);
- baseline: a bare python-socketio server that, on ``POST /fire``, emits ``escalation`` to a room of the 100 agents
  and pushes to the 100 subscriptions with the same libraries (pywebpush's encryption, py_vapid), no database;
- the handoff server (``handoff serve`` on a fresh database): the bot escalates over HTTP, the escalation is
  stored, the in-app ``escalation`` event goes to the bot's agents and the push fan-out starts.

Per escalation, from the moment the bot's request leaves: latency to the ``escalation`` event at each of the 100
agents (in-app) and to the decrypted push at the push service for each of the 100 devices (push), over
``--rounds`` escalations after a warm-up. Times are CLOCK_MONOTONIC, shared by the processes. Printed: p50/p99 of
each, the handoff server's ratios to the baseline, and the goals (in-app p99 <= 20 ms, push p99 <= 100 ms). A plot
of the latency distributions goes to reports/notify.png.

    .venv/bin/python benchmarks/notify.py [--agents 100] [--rounds 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from benchmarking import NAMESPACE, Api, connect, cpu_seconds, handoff_env, pct, serve_forever, start, stop  # sibling
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "server"))  # the local push service lives with the tests that use it

WARMUP_ROUNDS = 3
GOAL_IN_APP_P99_MS = 20.0
GOAL_PUSH_P99_MS = 100.0


@dataclass
class Result:
    name: str
    in_app_ms: list[float] = field(default_factory=list)
    push_ms: list[float] = field(default_factory=list)
    push_arrived_ms: list[float] = field(default_factory=list)  # the request reached the push service
    ack_ms: list[float] = field(default_factory=list)
    missing: int = 0  # notifications that never came within the round's wait


# -- the local push service (subprocess) ----------------------------------------------------------------------
def run_push_service() -> None:
    from aiohttp import web
    from push_testing import LocalPushService

    async def main() -> None:
        service = await LocalPushService().start()

        async def subscribe(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response([service.subscribe(body["server_key"]).json() for _ in range(body["count"])])

        by_conversation: dict[str, list[Any]] = {}
        indexed = 0

        async def results(request: web.Request) -> web.Response:
            nonlocal indexed
            for r in service.received[indexed:]:  # polled while pushes arrive: index only what is new
                by_conversation.setdefault(r.payload["data"]["conversation_id"], []).append(r)
            indexed = len(service.received)
            got = by_conversation.get(request.query["conversation_id"], [])
            return web.json_response({"decrypted_at": [r.decrypted_at for r in got],
                                      "arrived_at": [r.arrived_at for r in got], "refused": service.refused[-5:]})

        control = web.Application()
        control.router.add_post("/subscribe", subscribe)
        control.router.add_get("/results", results)
        await serve_forever(control, "push", f"(push at {service.url})")

    asyncio.run(main())


# -- the bare baseline (subprocess) ---------------------------------------------------------------------------
def run_bare_server() -> None:
    from aiohttp import web
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02
    from pywebpush import WebPusher

    async def main() -> None:
        sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=False)
        vapid = Vapid02(ec.generate_private_key(ec.SECP256R1()))
        public = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        public_b64 = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
        subscriptions: list[dict[str, Any]] = []
        session = aiohttp.ClientSession()
        tasks: set[asyncio.Task[Any]] = set()
        authorization: dict[str, str] = {}  # origin -> VAPID header, signed once like the server does

        class Agents(socketio.AsyncNamespace):
            async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
                await self.enter_room(sid, "agents")

        sio.register_namespace(Agents(NAMESPACE))
        app = web.Application()
        sio.attach(app)

        async def push_one(sub: dict[str, Any], data: bytes) -> None:
            origin = "/".join(sub["endpoint"].split("/")[:3])
            if origin not in authorization:
                authorization[origin] = vapid.sign({"aud": origin, "sub": "mailto:bench@localhost",
                                                    "exp": int(time.time()) + 3600})["Authorization"]
            headers = {"Authorization": authorization[origin], "Content-Encoding": "aes128gcm", "TTL": "120",
                       "Urgency": "high"}
            body = WebPusher(sub).encode(data, "aes128gcm")["body"]
            async with session.post(sub["endpoint"], data=body, headers=headers) as response:
                await response.read()

        async def fire(request: web.Request) -> web.Response:
            payload = await request.json()
            await sio.emit("escalation", payload, to="agents", namespace=NAMESPACE)
            data = json.dumps({"title": "bench", "body": "", "data": payload}).encode()
            gate = asyncio.Semaphore(64)

            async def limited(sub: dict[str, Any]) -> None:
                async with gate:
                    await push_one(sub, data)

            task = asyncio.ensure_future(asyncio.gather(*(limited(s) for s in subscriptions)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return web.json_response({"status": "waiting"})

        async def register(request: web.Request) -> web.Response:
            subscriptions.extend(await request.json())
            return web.json_response({"public_key": public_b64})

        app.router.add_post("/fire", fire)
        app.router.add_post("/subscriptions", register)
        await serve_forever(app, "bare", f"key {public_b64}")

    asyncio.run(main())


# -- the measuring side ---------------------------------------------------------------------------------------
async def connect_agents(url: str, tokens: list[str | None],
                         arrivals: dict[str, list[float]]) -> list[socketio.AsyncClient]:
    """Connect one Socket.IO client per agent; each records when an ``escalation`` arrives, per conversation."""
    async def on_escalation(event: dict[str, Any]) -> None:
        arrivals.setdefault(event["conversation_id"], []).append(time.monotonic())

    clients = []
    for i in range(0, len(tokens), 20):  # a few at a time: the server is on the same two cores
        clients += await asyncio.gather(*(connect(url, t, {"escalation": on_escalation}) for t in tokens[i:i + 20]))
    return clients


@dataclass
class Target:
    """One server under test: how to escalate on it, where its agents record arrivals, and its process."""

    result: Result
    escalate: Callable[[], Awaitable[tuple[str, float, float]]]
    arrivals: dict[str, list[float]]
    clients: list[socketio.AsyncClient]
    pid: int
    cpu_s: float = 0.0  # CPU seconds the server process spent during its measured rounds


async def one_round(target: Target, agents: int, http: aiohttp.ClientSession, push_url: str,
                    measured: bool) -> None:
    """Escalate once and wait until every agent's event and every device's push arrived (or 10 s passed)."""
    cid, sent, acked = await target.escalate()
    deadline = time.monotonic() + 10.0
    body: dict[str, Any] = {"decrypted_at": [], "arrived_at": []}
    while time.monotonic() < deadline:
        async with http.get(f"{push_url}/results", params={"conversation_id": cid}) as response:
            body = await response.json()
        if body["refused"]:
            raise SystemExit(f"the push service refused pushes: {body['refused']}")
        if len(body["decrypted_at"]) >= agents and len(target.arrivals.get(cid, [])) >= agents:
            break
        await asyncio.sleep(0.02)
    if not measured:
        return
    r = target.result
    got = target.arrivals.get(cid, [])
    r.in_app_ms += [(t - sent) * 1000 for t in got]
    r.push_ms += [(t - sent) * 1000 for t in body["decrypted_at"]]
    r.push_arrived_ms += [(t - sent) * 1000 for t in body["arrived_at"]]
    r.ack_ms.append((acked - sent) * 1000)
    r.missing += max(0, agents - len(got)) + max(0, agents - len(body["decrypted_at"]))


async def setup_bare(url: str, push_url: str, agents: int, http: aiohttp.ClientSession, pid: int) -> Target:
    async with http.post(f"{url}/subscriptions", json=[]) as response:
        key = (await response.json())["public_key"]
    async with http.post(f"{push_url}/subscribe", json={"count": agents, "server_key": key}) as response:
        subscriptions = await response.json()
    async with http.post(f"{url}/subscriptions", json=subscriptions) as response:
        await response.read()
    arrivals: dict[str, list[float]] = {}
    clients = await connect_agents(url, [None] * agents, arrivals)
    n = 0

    async def escalate() -> tuple[str, float, float]:
        nonlocal n
        n += 1
        cid = f"bare-{n}"
        sent = time.monotonic()
        async with http.post(f"{url}/fire", json={"conversation_id": cid, "bot_id": "bench"}) as response:
            await response.read()
        return cid, sent, time.monotonic()

    return Target(Result("baseline (bare)"), escalate, arrivals, clients, pid)


async def setup_handoff(url: str, push_url: str, agents: int, http: aiohttp.ClientSession, pid: int) -> Target:
    api = Api(url, http)
    async with http.get(api.base + "/push/vapid-public-key") as response:
        key = (await response.json())["public_key"]
    async with http.post(f"{push_url}/subscribe", json={"count": agents, "server_key": key}) as response:
        subscriptions = await response.json()
    bot_id = f"notify-bench-{int(time.time())}"
    bot = await api.post("/bots", {"bot_id": bot_id, "name": "Bench bot"})
    tokens = []
    for i in range(agents):
        agent = await api.post("/agents", {"agent_id": f"{bot_id}-a{i}", "name": f"Agent {i}", "bots": [bot_id]})
        await api.post("/agents/me/devices", {"kind": "webpush", "subscription": subscriptions[i]}, agent["token"])
        tokens.append(agent["token"])
    arrivals: dict[str, list[float]] = {}
    clients = await connect_agents(url, tokens, arrivals)

    async def escalate() -> tuple[str, float, float]:
        conv = await api.post(f"/bots/{bot_id}/conversations", {}, bot["api_key"])
        cid = conv["conversation_id"]
        sent = time.monotonic()
        await api.post(f"/conversations/{cid}/escalate",
                       {"reason": "benchmark", "transcript": [{"role": "customer", "text": "I need a human"}]},
                       bot["api_key"])
        return cid, sent, time.monotonic()

    return Target(Result("handoff server"), escalate, arrivals, clients, pid)


async def run_rounds(targets: list[Target], agents: int, count: int, http: aiohttp.ClientSession,
                     push_url: str, push_pid: int) -> dict[str, float]:
    """Alternate the targets round by round, so both meet the same machine (other work on these cores comes and
    goes); returns the push service's CPU seconds per target."""
    push_cpu = {t.result.name: 0.0 for t in targets}
    with tqdm(total=(count + WARMUP_ROUNDS) * len(targets), desc="escalations", unit="escalation") as progress:
        for i in range(count + WARMUP_ROUNDS):
            for target in targets:
                measured = i >= WARMUP_ROUNDS
                server0, push0 = cpu_seconds(target.pid), cpu_seconds(push_pid)
                await one_round(target, agents, http, push_url, measured)
                if measured:
                    target.cpu_s += cpu_seconds(target.pid) - server0
                    push_cpu[target.result.name] += cpu_seconds(push_pid) - push0
                progress.update()
                await asyncio.sleep(0.05)
    return push_cpu


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, what, goal in ((axes[0], "in_app_ms", GOAL_IN_APP_P99_MS), (axes[1], "push_ms", GOAL_PUSH_P99_MS)):
        for r in results:
            data = sorted(getattr(r, what))
            if data:
                ax.plot(data, [(i + 1) / len(data) for i in range(len(data))], label=r.name)
        ax.axvline(goal, color="grey", linestyle="--", label=f"p99 goal {goal:.0f} ms")
        ax.set_title("escalation -> in-app event" if what == "in_app_ms" else "escalation -> decrypted push")
        ax.set_xlabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("fraction of notifications")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> int:
    load_before = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'notify.db'}"
        # Rounds are spaced well under the ladder's defaults, but keep reminders out of the measurement.
        env = handoff_env(database_url, log_level=os.environ.get("HANDOFF_BENCH_LOG_LEVEL", "WARNING"),
                          ladder_renotify_after_s="off", ladder_wait_notice_after_s="off")
        procs: list[subprocess.Popen[str]] = []
        targets: list[Target] = []
        try:
            push_proc, push_url = start([sys.executable, __file__, "--push-service"])
            procs.append(push_proc)
            bare_proc, bare_url = start([sys.executable, __file__, "--bare-server"])
            procs.append(bare_proc)
            handoff_proc, handoff_url = start([sys.executable, "-m", "handoff", "serve", "--port", "0"], env=env)
            procs.append(handoff_proc)
            async with aiohttp.ClientSession() as http:
                targets = [await setup_bare(bare_url, push_url, args.agents, http, bare_proc.pid),
                           await setup_handoff(handoff_url, push_url, args.agents, http, handoff_proc.pid)]
                push_cpu = await run_rounds(targets, args.agents, args.rounds, http, push_url, push_proc.pid)
        finally:
            for target in targets:
                await asyncio.gather(*(c.disconnect() for c in target.clients), return_exceptions=True)
            for proc in procs:
                stop(proc)
    bare, handoff = targets[0].result, targets[1].result
    results = [bare, handoff]
    print(f"\n{args.agents} agents of one bot, each connected and with one Web Push device; {args.rounds} escalations "
          f"per server after {WARMUP_ROUNDS} warm-up, the two servers alternating; database: "
          f"{'SQLite file' if not args.database_url else database_url.split('@')[-1]}; cores: {os.cpu_count()}")
    print(f"{'latency from the escalate request, ms':<40} {'baseline p50':>12} {'p99':>7} {'handoff p50':>12} "
          f"{'p99':>7} {'ratio p50':>10} {'p99':>6}  goal")
    for label, what, goal in (("in-app escalation event at the agent", "in_app_ms", f"p99 <= {GOAL_IN_APP_P99_MS:.0f}"),
                              ("push decrypted at the push service", "push_ms", f"p99 <= {GOAL_PUSH_P99_MS:.0f}"),
                              ("  push request read by the push service", "push_arrived_ms", ""),
                              ("escalate acknowledged (HTTP 200)", "ack_ms", "")):
        b, h = getattr(bare, what), getattr(handoff, what)
        print(f"{label:<40} {pct(b, .5):>12.1f} {pct(b, .99):>7.1f} {pct(h, .5):>12.1f} {pct(h, .99):>7.1f} "
              f"{pct(h, .5) / pct(b, .5):>10.2f} {pct(h, .99) / pct(b, .99):>6.2f}  {goal}")
    per = 1000.0 / args.rounds
    print(f"CPU ms per escalation: baseline server {targets[0].cpu_s * per:.1f}, handoff server "
          f"{targets[1].cpu_s * per:.1f}; push service {push_cpu[bare.name] * per:.1f} (baseline rounds) / "
          f"{push_cpu[handoff.name] * per:.1f} (handoff rounds)")
    print(f"notifications missing: baseline {bare.missing}, handoff {handoff.missing}; "
          f"load average before/after: {load_before} / {os.getloadavg()[0]:.1f}")
    in_app_ok = pct(handoff.in_app_ms, .99) <= GOAL_IN_APP_P99_MS
    push_ok = pct(handoff.push_ms, .99) <= GOAL_PUSH_P99_MS
    print(f"goals: in-app p99 <= {GOAL_IN_APP_P99_MS:.0f} ms -> {'met' if in_app_ok else 'MISSED'}; "
          f"push p99 <= {GOAL_PUSH_P99_MS:.0f} ms -> {'met' if push_ok else 'MISSED'}; "
          f"every notification arrived: {'yes' if handoff.missing == 0 else 'NO'}")
    plot(results, Path(args.plot))
    print(f"plot: {args.plot}")
    return 0 if in_app_ok and push_ok and handoff.missing == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents (and devices) of the bot (default 100)")
    parser.add_argument("--rounds", type=int, default=30, help="measured escalations (default 30)")
    parser.add_argument("--database-url", help="the handoff server's database (default: a fresh SQLite file)")
    parser.add_argument("--plot", default=str(ROOT / "reports" / "notify.png"), help="where the plot goes")
    parser.add_argument("--push-service", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.push_service:
        run_push_service()
        return 0
    if args.bare_server:
        run_bare_server()
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
