"""Helpers for the server tests: real Socket.IO clients that record what they receive, a handle on a running
server with set-up through its real HTTP API, and a real ``handoff serve`` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio
from aiohttp import web
from handoff.app import PARTS, SIO
from handoff.settings import Settings
from handoff.suggestions import ProvidedSuggestions
from local_http import serve_app

from copilot.data.context import Context, Suggestion
from copilot.live.protocol import API_PREFIX, NAMESPACE
from copilot.processes import ServerProcess as ServeProcess
from copilot.processes import start_url_process

POSTGRES_ADMIN_URL = os.environ.get("HANDOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_KEY = "test-admin-key-0123456789abcdef"
WAIT_S = 10.0  # generous: the machine is shared; a failing wait means the event never came


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _replace_db(url: str, database: str) -> str:
    scheme, rest = _asyncpg_dsn(url).split("://", 1)
    hostpart, _, query = rest.partition("?")
    host = hostpart.split("/", 1)[0]
    return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Client:
    """A real ``socketio.AsyncClient`` on /handoff that records every server event it receives."""

    def __init__(self, url: str, token: str, *, transports: list[str] | None = None) -> None:
        self.url = url
        self.token = token
        self.transports = transports or ["websocket"]
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, Any]] = []
        self.arrived: list[float] = []  # time.perf_counter() of each received event, in step with ``received``
        self._changed = asyncio.Condition()
        self.sio.on("*", self._record, namespace=NAMESPACE)

    async def _record(self, event: str, data: Any) -> None:
        arrived = time.perf_counter()
        async with self._changed:
            self.received.append((event, data))
            self.arrived.append(arrived)
            self._changed.notify_all()

    def arrival(self, event: str, where: Callable[[Any], bool] = lambda _: True) -> float:
        """When the first received ``event`` satisfying ``where`` arrived (time.perf_counter())."""
        return next(t for (name, data), t in zip(self.received, self.arrived, strict=True)
                    if name == event and where(data))

    async def connect(self) -> Client:
        await self.sio.connect(self.url, auth={"token": self.token}, namespaces=[NAMESPACE],
                               transports=self.transports, wait_timeout=WAIT_S)
        return self

    async def call(self, event: str, payload: Any = None, *, wait_s: float = WAIT_S) -> dict[str, Any]:
        """Send ``event`` and return its ack."""
        ack = await self.sio.call(event, payload, namespace=NAMESPACE, timeout=wait_s)
        assert isinstance(ack, dict), f"{event}: ack {ack!r} is not an object"
        return ack

    async def ok(self, event: str, payload: Any = None) -> dict[str, Any]:
        """Send ``event``; fail the test unless the ack is ok."""
        ack = await self.call(event, payload)
        assert ack.get("ok") is True, f"{event} {payload!r} refused: {ack}"
        return ack

    async def wait_for(self, event: str, where: Callable[[Any], bool] = lambda _: True,
                       wait_s: float = WAIT_S) -> Any:
        """The first received ``event`` whose payload satisfies ``where`` (waiting for it if need be)."""
        async def found() -> Any:
            async with self._changed:
                while True:
                    for name, data in self.received:
                        if name == event and where(data):
                            return data
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(found(), wait_s)
        except TimeoutError:
            raise AssertionError(f"no {event!r} event matching the condition within {wait_s} s; "
                                 f"received {[n for n, _ in self.received]}") from None

    def events(self, event: str, conversation_id: str | None = None) -> list[Any]:
        return [d for n, d in self.received
                if n == event and (conversation_id is None or d.get("conversation_id") == conversation_id)]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()


@dataclass
class Bot:
    bot_id: str
    api_key: str


@dataclass
class Agent:
    agent_id: str
    name: str
    token: str


@dataclass
class Server:
    """A running server and helpers to set up bots, agents, conversations and clients through its real API."""

    url: str
    app: web.Application | None
    http: aiohttp.ClientSession
    clients: list[Client] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    async def request(self, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.api + path, headers=headers, **kw) as response:
            body = await response.json(content_type=None)
            return response.status, body

    async def expect(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        status, body = await self.request(method, path, token, **kw)
        assert status == 200, f"{method} {path}: {status} {body}"
        return body

    async def bot(self, webhook: str | None = None, bot_id: str | None = None) -> Bot:
        payload: dict[str, Any] = {"bot_id": bot_id or uid("bot"), "name": "Test bot"}
        if webhook:
            payload["handback_webhook"] = webhook
        body = await self.expect("POST", "/bots", ADMIN_KEY, json=payload)
        return Bot(body["bot_id"], body["api_key"])

    async def agent(self, *bots: Bot, name: str | None = None) -> Agent:
        agent_id = uid("agent")
        body = await self.expect("POST", "/agents", ADMIN_KEY,
                                 json={"agent_id": agent_id, "name": name or agent_id.title(),
                                       "bots": [b.bot_id for b in bots]})
        return Agent(agent_id, name or agent_id.title(), body["token"])

    async def conversation(self, bot: Bot, **payload: Any) -> tuple[str, str]:
        body = await self.expect("POST", f"/bots/{bot.bot_id}/conversations", bot.api_key, json=payload)
        return body["conversation_id"], body["customer_token"]

    async def escalate(self, bot: Bot, conversation_id: str, **payload: Any) -> Any:
        return await self.expect("POST", f"/conversations/{conversation_id}/escalate", bot.api_key, json=payload)

    async def client(self, token: str, **kw: Any) -> Client:
        c = Client(self.url, token, **kw)
        self.clients.append(c)
        return await c.connect()

    async def close_clients(self) -> None:
        for c in self.clients:
            if self.app is not None and c.sio.connected and c.sio.transport() == "polling":
                # A polling client's own disconnect waits for its pending GET, which the server holds for up
                # to ping_interval + ping_timeout; the server closing the socket answers that GET at once.
                await self.app[SIO].eio.disconnect(c.sio.eio.sid)
                for _ in range(100):
                    if c.sio.eio.state == "disconnected":
                        break
                    await asyncio.sleep(0.02)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        self.clients.clear()


def settings_for(database_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"database_url": database_url, "admin_key": ADMIN_KEY, "typing_timeout_s": 1.0,
                            "typing_throttle_s": 0.3, "webhook_backoff_s": 0.1, "webhook_poll_s": 0.2,
                            "webhook_timeout_s": 2.0, "sqlite_synchronous": "NORMAL"}
    base.update(overrides)
    return Settings(**base)


StartServer = Callable[..., Awaitable[Server]]


@contextlib.asynccontextmanager
async def server_starter(database_url: str, **defaults: Any) -> AsyncIterator[StartServer]:
    """``start(provider=None, clock=None, **overrides)`` starts an app on a free loopback port in the current event loop
    (settings ``defaults`` overridden by ``overrides``; ``clock``: e.g. a ``ManualClock`` the test moves); every server
    it started closes its clients and stops on exit."""
    from handoff.app import create_app

    runners: list[web.AppRunner] = []
    servers: list[Server] = []
    http = aiohttp.ClientSession()

    async def start(provider: Any = None, clock: Any = None, **overrides: Any) -> Server:
        app = create_app(settings_for(database_url, **{**defaults, **overrides}), suggestion_provider=provider,
                         clock=clock)
        runner, url = await serve_app(app)
        runners.append(runner)
        server = Server(url, app, http)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.close_clients()
        for runner in reversed(runners):
            await runner.cleanup()
        await http.close()


def parts(server: Server) -> Any:
    """The running app's parts (store, service, ...), for reading what was stored."""
    assert server.app is not None
    return server.app[PARTS]


def serve_process(database_url: str, *args: str, env: dict[str, str] | None = None,
                  python: str = sys.executable) -> ServeProcess:
    """Start ``python -m handoff serve --port 0`` (with ``python``: another environment's) and wait for the line
    that names its URL."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    full_env.update({"HANDOFF_DATABASE_URL": database_url, "HANDOFF_ADMIN_KEY": ADMIN_KEY,
                     "HANDOFF_LOG_LEVEL": os.environ.get("HANDOFF_TEST_SERVER_LOG_LEVEL", "WARNING")})
    full_env.update(env or {})
    return start_url_process([python, "-m", "handoff", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                             env=full_env)


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that records the webhooks it receives; can fail its first answers."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.perf_counter() of each call
        self.received = asyncio.Event()  # a webhook was accepted (2xx)
        self.attempted = asyncio.Event()  # a webhook arrived, whatever the answer
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        self.arrived.append(time.perf_counter())
        self.attempted.set()
        if len(self.calls) <= self.fail_first:
            return web.Response(status=503, text="try again")
        self.received.set()
        return web.json_response({"ok": True})

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/handed-back", self.handle)
        self._runner, base = await serve_app(app)
        self.url = f"{base}/handed-back"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.calls]


class ContextEchoTestProvider:
    """A deterministic test provider (the real SuggestionProvider interface): its suggestions spell out the context
    it was given, so a test can compare that context with ``context_from_events`` over the stored events."""

    strategy = "context-echo-test"

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        described = json.dumps({"bot": bot_id, "chatbot": context.chatbot,
                                "turns": [[t.role, t.text, t.label] for t in context.turns]})
        items = [Suggestion(described, 1.0, "echo_context"), Suggestion(f"{len(context.turns)} turns so far", 0.5)]
        return ProvidedSuggestions(self.strategy, items[:k])


class GatedTestProvider:
    """A test provider that answers only when the test opens the gate: a slow strategy, on demand."""

    strategy = "gated-test"

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        await self.gate.wait()
        last = context.turns[-1].text if context.turns else ""
        return ProvidedSuggestions(self.strategy, [Suggestion(f"reply to: {last}", 0.9)])


def make_echo_test_provider(settings: Settings) -> ContextEchoTestProvider:
    """For HANDOFF_SUGGESTION_PROVIDER=handoff_testing:make_echo_test_provider."""
    return ContextEchoTestProvider()
