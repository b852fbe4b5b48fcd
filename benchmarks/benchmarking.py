"""What the server benchmarks (relay.py, notify.py) share: starting and stopping the processes under test, the
environment of a ``handoff serve`` under load, the CPU a process used, percentiles, and the clients (Socket.IO and
the HTTP API) that load the servers.

Each server under test runs in its own process and announces itself with one line ``NAME: serving on
http://127.0.0.1:PORT ...`` on stdout (as ``handoff serve`` does); :func:`start` waits for that line.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiohttp import web

NAMESPACE = "/handoff"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"


def start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start a server process and return it with the URL of its ``serving on`` line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"{' '.join(cmd)} did not start: {line!r}")
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


async def serve_forever(app: web.Application, name: str, note: str = "") -> None:
    """Serve ``app`` on a free port of 127.0.0.1 and announce it the way :func:`start` waits for (the body of a
    baseline server's subprocess)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"{name}: serving on http://127.0.0.1:{runner.addresses[0][1]}{' ' + note if note else ''}", flush=True)
    await asyncio.Event().wait()


def handoff_env(database_url: str, *, log_level: str = "WARNING", **variables: str) -> dict[str, str]:
    """The environment of a ``handoff serve`` under test: this process's, with the database, the admin key, the log
    level and the HTTP API's rate limit out of the way (a benchmark creates bots and agents as fast as it can), then
    ``variables`` (``HANDOFF_<NAME>``)."""
    return {**os.environ, "HANDOFF_DATABASE_URL": database_url, "HANDOFF_ADMIN_KEY": ADMIN_KEY,
            "HANDOFF_LOG_LEVEL": log_level,
            "HANDOFF_HTTP_RATE_LIMIT_PER_S": "100000", "HANDOFF_HTTP_RATE_LIMIT_BURST": "100000",
            **{f"HANDOFF_{name.upper()}": value for name, value in variables.items()}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


async def connect(url: str, token: str | None,
                  handlers: dict[str, Callable[[Any], Awaitable[None]]] | None = None) -> socketio.AsyncClient:
    """A Socket.IO client on /handoff over WebSocket, without reconnection (a drop should fail the run), with
    ``handlers`` for server events registered before it connects."""
    client = socketio.AsyncClient(reconnection=False)
    for event, handler in (handlers or {}).items():
        client.on(event, handler, namespace=NAMESPACE)
    await client.connect(url, auth={"token": token} if token else None, namespaces=[NAMESPACE],
                         transports=["websocket"], wait_timeout=30)
    return client


class Api:
    """The handoff server's HTTP API; a refused request ends the benchmark with the server's answer."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.base = url + "/api/v1"
        self.http = http

    async def post(self, path: str, body: dict[str, Any], token: str = ADMIN_KEY) -> Any:
        """POST ``body`` to ``path`` with ``token`` (the admin key unless given) and return the answer's JSON."""
        async with self.http.post(self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            if not r.ok:
                raise SystemExit(f"{path}: {r.status} {await r.text()}")
            return await r.json()
