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
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from tqdm import tqdm

NAMESPACE = "/handoff"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
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
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


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
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"bare: serving on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, match.group(0)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def connect(url: str, token: str | None) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token} if token else None, namespaces=[NAMESPACE],
                         transports=["websocket"], wait_timeout=30)
    return client


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
    api = url + "/api/v1"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as http:
        async def post(path: str, token: str | None, body: dict[str, Any]) -> Any:
            headers = admin if token is None else {"Authorization": f"Bearer {token}"}
            async with http.post(api + path, json=body, headers=headers) as r:
                r.raise_for_status()
                return await r.json()

        bot_id = f"bench-{n}-{int(time.time() * 1000)}"
        bot = await post("/bots", None, {"bot_id": bot_id, "name": "bench bot"})
        agents = [await post("/agents", None, {"agent_id": f"{bot_id}-a{i}", "name": f"Agent {i}", "bots": [bot_id]})
                  for i in range(n)]
        convs = [await post(f"/bots/{bot_id}/conversations", bot["api_key"], {}) for _ in range(n)]
        for conv in convs:
            await post(f"/conversations/{conv['conversation_id']}/escalate", bot["api_key"], {})

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        env = {**os.environ, "HANDOFF_DATABASE_URL": database_url, "HANDOFF_ADMIN_KEY": ADMIN_KEY,
               "HANDOFF_LOG_LEVEL": "WARNING",
               # The closed loop sends as fast as acks come back: keep the limiter running but out of the way.
               "HANDOFF_RATE_LIMIT_PER_S": "100000", "HANDOFF_RATE_LIMIT_BURST": "100000",
               "HANDOFF_HTTP_RATE_LIMIT_PER_S": "100000", "HANDOFF_HTTP_RATE_LIMIT_BURST": "100000"}
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
