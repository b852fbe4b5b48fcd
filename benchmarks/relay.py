"""Relay throughput and latency: the full handoff server against a bare python-socketio ack-echo server.

In one run, on this machine, each server in its own process:
- bare: a python-socketio AsyncServer (aiohttp, namespace /handoff) whose ``message`` handler only returns an ack;
- relay: ``handoff serve`` on a fresh database: each customer message is validated, rate-limited, stored with its
  seq (committed), acknowledged and delivered to the claiming agent's socket.

For 50 and 200 concurrent conversations, every customer sends messages in a closed loop (the next one when the ack
of the last one arrived) for a fixed time. Printed: messages per second, and latency p50/p99: for bare, send to ack;
for the relay, send to delivery at the agent (the later of ack and delivery). Ratios relay/bare come from the same
run. Goals: relay throughput at least half of bare, relay p99 at most twice bare's.

    .venv/bin/python benchmarks/relay.py [--seconds 8] [--conversations 50,200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from benchmarking import NAMESPACE, Api, connect, cpu_seconds, handoff_env, pct, serve_forever, start, stop  # sibling
from tqdm import tqdm

WARMUP_S = 1.0


@dataclass
class Result:
    name: str
    conversations: int
    messages: int
    seconds: float
    latencies_ms: list[float]
    server_cpu: float = 0.0  # share of one core the server process used during the run
    client_cpu: float = 0.0  # the same for this load-generating process

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds

    def pct(self, q: float) -> float:
        return pct(self.latencies_ms, q)


# -- the bare baseline server (run in a subprocess) -----------------------------------------------------------
def run_bare_server() -> None:
    from aiohttp import web

    async def main() -> None:
        sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=2_000_000, async_handlers=False)
        seq = 0

        class Echo(socketio.AsyncNamespace):
            async def on_message(self, sid: str, data: Any) -> dict[str, Any]:
                nonlocal seq
                seq += 1
                return {"ok": True, "seq": seq}

        sio.register_namespace(Echo(NAMESPACE))
        app = web.Application()
        sio.attach(app)
        await serve_forever(app, "bare")

    asyncio.run(main())


async def closed_loop(sockets: list[socketio.AsyncClient], conversation_ids: list[str], seconds: float,
                      on_sent: Callable[[str, str, float], None],
                      latency_of_ack: Callable[[str, str, float], Awaitable[float | None]]) -> tuple[int, float]:
    """Every socket sends messages one after the other until ``seconds`` pass; counts those after the warm-up."""
    t0 = time.perf_counter()
    measured_from = t0 + WARMUP_S
    deadline = measured_from + seconds
    counted = 0

    async def one(sock: socketio.AsyncClient, cid: str) -> None:
        nonlocal counted
        i = 0
        while (now := time.perf_counter()) < deadline:
            client_id = f"m{i}"
            on_sent(cid, client_id, now)
            ack = await sock.call("message", {"conversation_id": cid, "client_id": client_id, "text": f"hello {i}"},
                                  namespace=NAMESPACE, timeout=30)
            if not ack.get("ok"):
                raise RuntimeError(f"refused: {ack}")
            await latency_of_ack(cid, client_id, now)
            if now >= measured_from:
                counted += 1
            i += 1

    await asyncio.gather(*(one(s, c) for s, c in zip(sockets, conversation_ids, strict=True)))
    return counted, seconds


async def bench_bare(url: str, n: int, seconds: float) -> Result:
    sockets = await asyncio.gather(*(connect(url, None) for _ in range(n)))
    latencies: list[float] = []
    measured_from = time.perf_counter() + WARMUP_S

    def sent(cid: str, client_id: str, at: float) -> None:
        pass

    async def acked(cid: str, client_id: str, at: float) -> float | None:
        if at >= measured_from:
            latencies.append((time.perf_counter() - at) * 1000)
        return None

    try:
        count, secs = await closed_loop(sockets, [f"c{i}" for i in range(n)], seconds, sent, acked)
    finally:
        await asyncio.gather(*(s.disconnect() for s in sockets))
    return Result("bare echo", n, count, secs, latencies)


async def bench_relay(url: str, n: int, seconds: float) -> Result:
    async with aiohttp.ClientSession() as http:
        api = Api(url, http)
        bot_id = f"bench-{n}-{int(time.time() * 1000)}"
        bot = await api.post("/bots", {"bot_id": bot_id, "name": "bench bot"})
        agents = [await api.post("/agents", {"agent_id": f"{bot_id}-a{i}", "name": f"Agent {i}", "bots": [bot_id]})
                  for i in range(n)]
        convs = [await api.post(f"/bots/{bot_id}/conversations", {}, bot["api_key"]) for _ in range(n)]
        for conv in convs:
            await api.post(f"/conversations/{conv['conversation_id']}/escalate", {}, bot["api_key"])

    cids = [c["conversation_id"] for c in convs]
    agent_socks = await asyncio.gather(*(connect(url, a["token"]) for a in agents))
    for sock, cid in zip(agent_socks, cids, strict=True):
        ack = await sock.call("claim", {"conversation_id": cid}, namespace=NAMESPACE, timeout=30)
        assert ack["ok"], ack
    customers = await asyncio.gather(*(connect(url, c["customer_token"]) for c in convs))

    sent_at: dict[tuple[str, str], float] = {}
    delivered: dict[tuple[str, str], asyncio.Future[float]] = {}
    latencies: list[float] = []
    measured_from = time.perf_counter() + WARMUP_S
    loop = asyncio.get_running_loop()

    def future(key: tuple[str, str]) -> asyncio.Future[float]:
        fut = delivered.get(key)
        if fut is None:
            fut = delivered[key] = loop.create_future()
        return fut

    for sock in agent_socks:
        async def on_message(event: dict[str, Any]) -> None:
            key = (event["conversation_id"], event["client_id"])
            fut = future(key)
            if not fut.done():
                fut.set_result(time.perf_counter())
        sock.on("message", on_message, namespace=NAMESPACE)

    def sent(cid: str, client_id: str, at: float) -> None:
        sent_at[(cid, client_id)] = at

    async def acked(cid: str, client_id: str, at: float) -> float | None:
        # The message counts as relayed when it is stored (ack) and delivered to the agent, whichever is later.
        key = (cid, client_id)
        fut = future(key)
        # Usually already delivered by the time the ack is read; a lost delivery would stall the run visibly.
        arrived = fut.result() if fut.done() else await fut
        done = max(arrived, time.perf_counter())
        del delivered[key], sent_at[key]
        if at >= measured_from:
            latencies.append((done - at) * 1000)
        return None

    try:
        count, secs = await closed_loop(customers, cids, seconds, sent, acked)
    finally:
        await asyncio.gather(*(s.disconnect() for s in [*customers, *agent_socks]))
    return Result("relay", n, count, secs, latencies)


def row(r: Result) -> str:
    return (f"{r.name:<10} {r.conversations:>5} {r.messages:>9} {r.throughput:>10.0f} "
            f"{r.pct(0.50):>8.2f} {r.pct(0.99):>8.2f} {r.server_cpu:>10.0%} {r.client_cpu:>10.0%}")


async def measured(run: Awaitable[Result], pid: int) -> Result:
    """Run one benchmark and record the CPU both processes used per wall second."""
    wall, server, client = time.perf_counter(), cpu_seconds(pid), time.process_time()
    result = await run
    wall = time.perf_counter() - wall
    result.server_cpu = (cpu_seconds(pid) - server) / wall
    result.client_cpu = (time.process_time() - client) / wall
    return result


async def main_async(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.conversations.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'relay.db'}"
        # The closed loop sends as fast as acks come back: keep the limiter running but out of the way.
        env = handoff_env(database_url, rate_limit_per_s="100000", rate_limit_burst="100000")
        relay_cmd = (args.relay_command.split() if args.relay_command
                     else [sys.executable, "-m", "handoff", "serve", "--port", "0"])
        bare_proc, bare_url = start([sys.executable, __file__, "--bare-server"])
        try:
            relay_proc, relay_url = start(relay_cmd, env=env)
        except BaseException:
            stop(bare_proc)
            raise
        results: list[tuple[Result, Result]] = []
        try:
            with tqdm(total=2 * len(sizes), desc="relay benchmark", unit="run") as progress:
                for n in sizes:
                    bare = await measured(bench_bare(bare_url, n, args.seconds), bare_proc.pid)
                    progress.update()
                    relay = await measured(bench_relay(relay_url, n, args.seconds), relay_proc.pid)
                    progress.update()
                    results.append((bare, relay))
        finally:
            stop(bare_proc)
            stop(relay_proc)
    print(f"\ndatabase: {database_url.split('@')[-1] if args.database_url else 'SQLite file (default settings)'}; "
          f"{args.seconds:.0f} s per run after {WARMUP_S:.0f} s warm-up; cores: {os.cpu_count()}")
    print(f"{'server':<10} {'convs':>5} {'messages':>9} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'server CPU':>10} {'client CPU':>10}")
    met = True
    for bare, relay in results:
        print(row(bare))
        print(row(relay))
        tput = relay.throughput / bare.throughput
        p99 = relay.pct(0.99) / bare.pct(0.99)
        ok = tput >= 0.5 and p99 <= 2.0
        met &= ok
        print(f"{'ratio':<10} {relay.conversations:>5} {'':>9} {tput:>10.2f} {relay.pct(0.5) / bare.pct(0.5):>8.2f} "
              f"{p99:>8.2f}   goals: throughput >= 0.50, p99 <= 2.00 -> {'met' if ok else 'MISSED'}")
    print(f"mean relay latency over all runs: {statistics.mean(x for _, r in results for x in r.latencies_ms):.2f} ms")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run (default 8)")
    parser.add_argument("--conversations", default="50,200", help="concurrent conversations per run")
    parser.add_argument("--database-url", help="the relay's database (default: a fresh SQLite file)")
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--relay-command", help="start the relay with this command instead (e.g. under a profiler)")
    args = parser.parse_args()
    if args.bare_server:
        run_bare_server()
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
