"""A small client of the handoff server (docs/protocol.md): its HTTP API and a Socket.IO connection on /handoff.

The replay (:mod:`copilot.live.replay`) drives the server with it as a bot, customers and agents would; tests and
notebooks can use it too. Every client event is sent with an acknowledgement; a refused event raises
:class:`HandoffRefused` with the server's error code. Received events are kept per conversation with their arrival
time (``time.perf_counter()``), and :meth:`Connection.wait_for` waits for one that matches.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from copilot.live.protocol import API_PREFIX, NAMESPACE


class HandoffRefused(RuntimeError):
    """The server refused a request or event: ``code`` is the protocol's error code, ``error`` the whole error."""

    def __init__(self, what: str, error: dict[str, Any]):
        self.code = str(error.get("code", "unknown"))
        self.error = error
        super().__init__(f"{what}: {self.code}: {error.get('message', '')}")


class HandoffHttp:
    """The HTTP API (prefix /api/v1) with one aiohttp session."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.session = session

    async def request(self, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.url + API_PREFIX + path, headers=headers, json=json) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                error = body.get("error", {}) if isinstance(body, dict) else {"message": str(body)}
                raise HandoffRefused(f"{method} {path} ({resp.status})", error)
            return body

    async def create_bot(self, admin_key: str, bot_id: str, name: str) -> str:
        """A new bot; returns its API key."""
        body = await self.request("POST", "/bots", admin_key, {"bot_id": bot_id, "name": name})
        return str(body["api_key"])

    async def create_agent(self, admin_key: str, agent_id: str, name: str, bots: list[str]) -> str:
        """A new agent registered for ``bots``; returns its token."""
        body = await self.request("POST", "/agents", admin_key, {"agent_id": agent_id, "name": name, "bots": bots})
        return str(body["token"])

    async def create_conversation(self, bot_key: str, bot_id: str) -> tuple[str, str]:
        """A new conversation of ``bot_id``; returns its id and the customer token."""
        body = await self.request("POST", f"/bots/{bot_id}/conversations", bot_key, {})
        return str(body["conversation_id"]), str(body["customer_token"])

    async def healthz(self) -> bool:
        try:
            await self.request("GET", "/healthz")
        except (aiohttp.ClientError, HandoffRefused):
            return False
        return True


@dataclass
class Received:
    event: str
    data: Any
    at: float


@dataclass
class _Inbox:
    events: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Connection:
    """One Socket.IO connection to /handoff with a credential; records what it receives, per conversation.

    ``on_event`` (optional) is called for every received event, e.g. an agent reacting to ``escalation``.
    ``seen`` counts every received event by name, whatever its conversation, for the connection's lifetime.
    """

    def __init__(self, url: str, token: str, *, on_event: Callable[[Received], None] | None = None) -> None:
        self.url = url
        self.token = token
        self.on_event = on_event
        self.sio = socketio.AsyncClient(reconnection=False)
        self._inboxes: dict[str, _Inbox] = {}
        self.seen: Counter[str] = Counter()
        self.sio.on("*", self._record, namespace=NAMESPACE)

    async def _record(self, event: str, data: Any) -> None:
        received = Received(event, data, time.perf_counter())
        self.seen[event] += 1
        cid = data.get("conversation_id") if isinstance(data, dict) else None
        if cid is not None:
            inbox = self._inboxes.setdefault(str(cid), _Inbox())
            inbox.events.append(received)
            inbox.changed.set()
        if self.on_event is not None:
            self.on_event(received)

    async def connect(self, timeout_s: float = 30.0) -> Connection:
        await self.sio.connect(self.url, auth={"token": self.token}, namespaces=[NAMESPACE],
                               transports=["websocket"], wait_timeout=timeout_s)
        return self

    async def call(self, event: str, payload: dict[str, Any], *, timeout_s: float = 30.0) -> dict[str, Any]:
        """Send ``event`` and return its ack; raises HandoffRefused when the ack is not ok."""
        ack = await self.sio.call(event, payload, namespace=NAMESPACE, timeout=timeout_s)
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            error = ack.get("error", {}) if isinstance(ack, dict) else {"message": repr(ack)}
            raise HandoffRefused(event, error)
        return ack

    def received(self, conversation_id: str, event: str | None = None) -> list[Received]:
        inbox = self._inboxes.get(conversation_id)
        return [r for r in (inbox.events if inbox else []) if event is None or r.event == event]

    async def wait_for(self, conversation_id: str, event: str | None,
                       where: Callable[[Any], bool] = lambda _: True, timeout_s: float = 10.0) -> Received | None:
        """The first received ``event`` (None: any event) of the conversation whose payload satisfies ``where``;
        None on timeout."""
        inbox = self._inboxes.setdefault(conversation_id, _Inbox())
        deadline = time.perf_counter() + timeout_s
        while True:
            for r in inbox.events:
                if (event is None or r.event == event) and where(r.data):
                    return r
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            inbox.changed.clear()
            try:
                await asyncio.wait_for(inbox.changed.wait(), left)
            except TimeoutError:
                continue

    def forget(self, conversation_id: str) -> None:
        """Drop what was received for a finished conversation (a long replay keeps memory flat)."""
        self._inboxes.pop(conversation_id, None)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()
