"""From the services' outcomes to Socket.IO: rooms, emits, subscriptions, and the background suggestion tasks.

Rooms (namespace /handoff):
- ``c:customer:<conversation>``, ``c:agent:<conversation>``: sockets subscribed to a conversation, by role;
- ``a:<agent>``: every socket of one agent; ``ba:<bot>``: every agent socket registered for a bot;
- ``b:<bot>``: every socket of a bot.

Each conversation's operations run under a per-conversation lock in this process, held from the database write to
the last emit, so its broadcasts leave in seq order and a ``resume``/``join`` subscribes and reads at one instant:
what happened before is in the ack, what happens after is broadcast, nothing in both or neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import socketio

from copilot.live.protocol import NAMESPACE, ROLE_AGENT, ROLE_CUSTOMER
from handoff.outcomes import (
    AgentSockets,
    Audience,
    BotAgents,
    Broadcast,
    Outcome,
    Subscribed,
    SuggestionRequest,
    TheBot,
)
from handoff.sidebar import SidebarService

log = logging.getLogger(__name__)


def conversation_room(conversation_id: str, role: str) -> str:
    return f"c:{role}:{conversation_id}"


def agent_room(agent_id: str) -> str:
    return f"a:{agent_id}"


def bot_room(bot_id: str) -> str:
    return f"b:{bot_id}"


def bot_agents_room(bot_id: str) -> str:
    return f"ba:{bot_id}"


def rooms_for(audiences: Iterable[Audience]) -> list[str]:
    """The Socket.IO rooms of some audiences (python-socketio sends once per socket across a list of rooms)."""
    rooms: list[str] = []
    for aud in audiences:
        if isinstance(aud, Subscribed):
            rooms.extend(conversation_room(aud.conversation_id, r) for r in sorted(aud.roles))
        elif isinstance(aud, TheBot):
            rooms.append(bot_room(aud.bot_id))
        elif isinstance(aud, AgentSockets):
            rooms.append(agent_room(aud.agent_id))
        elif isinstance(aud, BotAgents):
            rooms.append(bot_agents_room(aud.bot_id))
        else:  # pragma: no cover - the Audience union is closed
            raise TypeError(f"unknown audience {aud!r}")
    return list(dict.fromkeys(rooms))


class KeyedLocks:
    """An asyncio lock per key, forgotten when nobody holds or waits for it. ``async with locks.hold(key):``"""

    def __init__(self) -> None:
        self._locks: dict[str, _KeyedLock] = {}

    def hold(self, key: str) -> _KeyedLock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _KeyedLock(self._locks, key)
        return lock

    def __len__(self) -> int:
        return len(self._locks)


class _KeyedLock:
    """One key's lock; a plain class rather than a generator context manager, as it is taken for every event."""

    __slots__ = ("_key", "_lock", "_owner", "_users")

    def __init__(self, owner: dict[str, _KeyedLock], key: str) -> None:
        self._owner = owner
        self._key = key
        self._lock = asyncio.Lock()
        self._users = 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._release_user()

    def _release_user(self) -> None:
        self._users -= 1
        if self._users == 0:
            del self._owner[self._key]


class Delivery:
    """Runs conversation operations under their lock and sends what they produced.

    Args:
        sio: the Socket.IO server.
        sidebar: computes and offers the suggestions an outcome asks for, in background tasks.
        on_webhook: called when an outcome queued a webhook (wakes the deliverer).
        on_ladder: called when an outcome scheduled an unclaimed-escalation ladder (wakes its loop).
    """

    def __init__(self, sio: socketio.AsyncServer, sidebar: SidebarService,
                 on_webhook: Callable[[], None] | None = None, on_ladder: Callable[[], None] | None = None) -> None:
        self.sio = sio
        self.sidebar = sidebar
        self.on_webhook = on_webhook
        self.on_ladder = on_ladder
        self.locks = KeyedLocks()
        self.tasks: set[asyncio.Task[None]] = set()
        self._rooms: dict[str, set[str]] = {}  # sid -> rooms it entered here (skip re-entering on every event)

    async def run(self, conversation_id: str, sid: str | None,
                  op: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run ``op`` (a service's operation on ``conversation_id``) and deliver its outcome; ``sid`` sent the event."""
        async with self.locks.hold(conversation_id):
            outcome = await op()
            await self.deliver(outcome, sid)
        self._after(outcome)
        return outcome

    async def run_optional(self, conversation_id: str, op: Callable[[], Awaitable[Outcome | None]]) -> Outcome | None:
        """Like :meth:`run` for background operations that may find nothing to do (the ladder's rungs)."""
        async with self.locks.hold(conversation_id):
            outcome = await op()
            if outcome is not None:
                await self.deliver(outcome, None)
        if outcome is not None:
            self._after(outcome)
        return outcome

    def _after(self, outcome: Outcome) -> None:
        if outcome.suggest is not None:
            self.spawn(self._suggest(outcome.suggest))
        if outcome.webhook_enqueued and self.on_webhook is not None:
            self.on_webhook()
        if outcome.ladder_started and self.on_ladder is not None:
            self.on_ladder()

    async def deliver(self, outcome: Outcome, sid: str | None) -> None:
        """Subscribe first (so a subscriber misses nothing), then emit every broadcast in order."""
        if outcome.subscribe is not None:
            conversation_id, role = outcome.subscribe
            if sid is not None and role in (ROLE_CUSTOMER, ROLE_AGENT):
                await self.subscribe(sid, conversation_room(conversation_id, role))
            if outcome.subscribe_agent is not None:
                # A won claim subscribes every connected socket of the agent (its phone and its browser).
                room = conversation_room(conversation_id, ROLE_AGENT)
                for other, _ in list(self.sio.manager.get_participants(NAMESPACE, agent_room(outcome.subscribe_agent))):
                    await self.subscribe(other, room)
        for broadcast in outcome.broadcasts:
            await self.emit(broadcast, sid)

    async def subscribe(self, sid: str, room: str) -> None:
        rooms = self._rooms.setdefault(sid, set())
        if room not in rooms:
            await self.sio.enter_room(sid, room, namespace=NAMESPACE)
            rooms.add(room)

    def forget(self, sid: str) -> None:
        """The socket disconnected (Socket.IO drops its rooms itself)."""
        self._rooms.pop(sid, None)

    async def emit(self, broadcast: Broadcast, sid: str | None = None) -> None:
        rooms = rooms_for(broadcast.to)
        skip = sid if broadcast.skip_sender else None
        await self.sio.emit(broadcast.event, broadcast.payload, to=rooms, skip_sid=skip, namespace=NAMESPACE)

    async def emit_to_bot_agents(self, event: str, payload: dict[str, Any], bot_id: str) -> None:
        """For the in-app notifier: ``event`` to every connected agent registered for ``bot_id``."""
        await self.sio.emit(event, payload, to=bot_agents_room(bot_id), namespace=NAMESPACE)

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _suggest(self, req: SuggestionRequest) -> None:
        try:
            prepared = await self.sidebar.compute(req)
            if prepared is None:
                return
            # Under the conversation's lock: no message can slip in between the staleness check and the emit.
            async with self.locks.hold(req.conversation_id):
                broadcast = await self.sidebar.offer(prepared)
                if broadcast is not None:
                    await self.emit(broadcast)
        except Exception:
            log.exception("suggestions for %s@%d failed", req.conversation_id, req.for_seq)

    async def close(self) -> None:
        """Cancel the background tasks still running (suggestions being computed)."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
