"""The parties of a replay: a chatbot's bot and agents, and the :class:`Replayer` that drives one server with them.

Per recorded conversation: the bot creates it over the HTTP API, a customer connection and the bot's connection
replay the bot phase (the customer types before each message; messages carry their recorded label where the
protocol allows; the bot's lookups are posted as ``tool_event``), the bot escalates, the K agents registered for
that bot hear the ``escalation`` and race to claim, the winner replays the agent turns and the agent's lookups while
the customer replays the customer turns, and the conversation ends as recorded (hand back before the bot speaks or
looks something up again, else resolve; an abandoned conversation is resolved by its agent). Every turn is sent by
the party that made it, with a client id made from its index (``r<n>`` for a message, ``t<n>`` for a lookup), so a
resend is stored once. At each agent turn the replay waits for the ``suggestions`` the server sent for the
conversation's latest stored event (matched by ``for_seq``: the customer message, the claim, the agent's previous
message or the agent's lookup) and records them next to what the agent really sent, as a row of the per-turn
predictions table (:mod:`copilot.data.predictions`). Before it lets a conversation go, the replay waits until the
customer's connection has received the last event meant for it, and keeps the count of every event it received
(``customer_received``: a customer never receives a ``tool_event``). Many conversations run at once (asyncio,
``concurrency``). :mod:`copilot.live.replay` runs it and writes the results.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tqdm.auto import tqdm

from copilot.data.context import Suggestion
from copilot.data.predictions import prediction_row
from copilot.data.records import Conversation, Turn
from copilot.live.client import Connection, HandoffHttp, HandoffRefused, Received
from copilot.live.protocol import (
    EV_CLAIM,
    EV_ESCALATE,
    EV_ESCALATION,
    EV_HAND_BACK,
    EV_MESSAGE,
    EV_RESOLVE,
    EV_SUGGESTIONS,
    EV_TOOL_EVENT,
    EV_TYPING,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay.

    Attributes:
        concurrency: conversations in flight at once.
        agents: simulated agents per chatbot (all registered for it, all racing for each of its escalations).
        speed: ``asap`` (no pauses), ``realtime`` (the recorded gaps between turn times) or ``xF`` (F times faster).
        suggestion_wait_s: how long an agent turn waits for its suggestions before recording none.
        expect_suggestions: False for a server without a provider: agent turns do not wait for suggestions.
        strategy_id: the ``strategy`` column; default: what the server named in its ``suggestions``.
    """

    concurrency: int = 8
    agents: int = 3
    speed: str = "asap"
    suggestion_wait_s: float = 10.0
    expect_suggestions: bool = True
    strategy_id: str | None = None

    def speed_factor(self) -> float | None:
        """None for asap, else how many times faster than recorded."""
        if self.speed == "asap":
            return None
        if self.speed == "realtime":
            return 1.0
        match = re.fullmatch(r"x(\d+(?:\.\d+)?)", self.speed)
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"speed must be asap, realtime or xF (F > 0), not {self.speed!r}")
        return float(match.group(1))


@dataclass
class ConversationResult:
    """What the replay of one recorded conversation did and measured.

    ``server_id`` is the server's id of the replayed conversation; ``tool_events`` how many lookups were posted;
    ``customer_received`` the events the customer's connection received, counted by name.
    """

    conversation_id: str
    chatbot: str
    completed: bool = False
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    notification_ms: list[float] = field(default_factory=list)
    claim_ms: float | None = None
    first_agent_reply_ms: float | None = None
    suggestion_ms: list[float] = field(default_factory=list)
    losers: int = 0
    loser_codes: list[str] = field(default_factory=list)
    server_id: str | None = None
    tool_events: int = 0
    customer_received: dict[str, int] = field(default_factory=dict)


def _turn_time(turn: Turn) -> float | None:
    if turn.at is None:
        return None
    return datetime.fromisoformat(turn.at.replace("Z", "+00:00")).timestamp()


class _Bot:
    """A chatbot's side of the replay: its API key, one bot connection, K agent connections racing for claims."""

    def __init__(self, chatbot: str) -> None:
        self.chatbot = chatbot
        self.api_key = ""
        self.connection: Connection | None = None
        self.agents: list[tuple[str, Connection]] = []
        self.degraded = False  # suggestions never came once: stop waiting for them for this bot


class Replayer:
    """Drives one server with a dataset's conversations; see the module docstring."""

    def __init__(self, url: str, admin_key: str, config: ReplayConfig, *, run_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.config = config
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.bots: dict[str, _Bot] = {}
        # conversation id (server's) -> per-agent claim outcomes, filled by the agents' escalation handlers
        self._races: dict[str, asyncio.Future[tuple[str, Connection, dict[str, Any], float]]] = {}
        self._race_losers: dict[str, list[str]] = {}
        self._notified: dict[str, list[float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.http: HandoffHttp | None = None

    # -- set-up ---------------------------------------------------------------------------------------------------

    async def setup(self, http: HandoffHttp, chatbots: Sequence[str]) -> None:
        """Create each chatbot's bot (bot id = chatbot id, so ``copilot-<chatbot>@champion`` serves it) and agents."""
        self.http = http
        for chatbot in chatbots:
            bot = _Bot(chatbot)
            bot.api_key = await http.create_bot(self.admin_key, chatbot, f"{chatbot} (replay)")
            bot.connection = await Connection(self.url, bot.api_key).connect()
            for i in range(self.config.agents):
                agent_id = f"replay-{self.run_id}-{chatbot}-{i + 1}"[:200]
                token = await http.create_agent(self.admin_key, agent_id, f"Agent {i + 1} of {chatbot}", [chatbot])
                conn = Connection(self.url, token)
                conn.on_event = self._agent_handler(agent_id, conn)
                await conn.connect()
                bot.agents.append((agent_id, conn))
            self.bots[chatbot] = bot

    def _agent_handler(self, agent_id: str, conn: Connection) -> Any:
        def on_event(received: Received) -> None:
            if received.event != EV_ESCALATION or not isinstance(received.data, dict):
                return
            cid = str(received.data.get("conversation_id"))
            if cid not in self._races or received.data.get("renotify"):
                return
            self._notified.setdefault(cid, []).append(received.at)
            task = asyncio.ensure_future(self._claim(agent_id, conn, cid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return on_event

    async def _claim(self, agent_id: str, conn: Connection, cid: str) -> None:
        race = self._races.get(cid)
        try:
            ack = await conn.call(EV_CLAIM, {"conversation_id": cid})
        except HandoffRefused as exc:
            self._race_losers.setdefault(cid, []).append(exc.code)
            return
        except Exception as exc:  # a lost connection: this agent is out of the race
            self._race_losers.setdefault(cid, []).append(type(exc).__name__)
            return
        if race is not None and not race.done():
            race.set_result((agent_id, conn, ack, time.perf_counter()))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        conns = [c for b in self.bots.values() for c in ([b.connection] if b.connection else [])
                 + [a for _, a in b.agents]]
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    # -- one conversation -----------------------------------------------------------------------------------------

    async def _pause(self, previous: Turn | None, turn: Turn) -> None:
        factor = self.config.speed_factor()
        if factor is None or previous is None:
            return
        a, b = _turn_time(previous), _turn_time(turn)
        if a is not None and b is not None and b > a:
            await asyncio.sleep((b - a) / factor)

    async def replay_one(self, conv: Conversation) -> ConversationResult:
        result = ConversationResult(conv.conversation_id, conv.chatbot)
        try:
            await self._replay_one(conv, result)
            result.completed = True
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            log.warning("conversation %s failed: %s", conv.conversation_id, result.error)
        return result

    async def _replay_one(self, conv: Conversation, result: ConversationResult) -> None:
        assert self.http is not None
        bot = self.bots[conv.chatbot]
        assert bot.connection is not None
        cid, customer_token = await self.http.create_conversation(bot.api_key, conv.chatbot)
        result.server_id = cid
        customer = await Connection(self.url, customer_token).connect()
        try:
            await self._drive(conv, result, bot, cid, customer)
        finally:
            await customer.close()
            result.customer_received = dict(customer.seen)
            for _, agent in bot.agents:
                agent.forget(cid)
            bot.connection.forget(cid)
            self._races.pop(cid, None)
            self._notified.pop(cid, None)

    async def _say(self, conn: Connection, cid: str, turn: Turn, n: int, *, typing: bool) -> tuple[int, float]:
        """Send a recorded turn as a message (typing first); returns its seq and when it was sent."""
        if typing:
            await conn.call(EV_TYPING, {"conversation_id": cid, "state": "start"})
        payload: dict[str, Any] = {"conversation_id": cid, "client_id": f"r{n}", "text": turn.text}
        if turn.label is not None and turn.role != "customer":
            payload["label"] = turn.label
        sent = time.perf_counter()
        ack = await conn.call(EV_MESSAGE, payload)
        return int(ack["seq"]), sent

    async def _look_up(self, conn: Connection, cid: str, turn: Turn, n: int) -> tuple[int, float]:
        """Post a recorded tool turn as a ``tool_event``; returns its seq and when it was sent."""
        assert turn.tool is not None
        payload: dict[str, Any] = {"conversation_id": cid, "client_id": f"t{n}", **turn.tool.to_json()}
        sent = time.perf_counter()
        ack = await conn.call(EV_TOOL_EVENT, payload)
        return int(ack["seq"]), sent

    async def _drive(self, conv: Conversation, result: ConversationResult, bot: _Bot, cid: str,
                     customer: Connection) -> None:
        assert bot.connection is not None
        previous: Turn | None = None
        visible = 0  # the latest seq the customer must receive: neither its own message nor a lookup
        for n, turn in enumerate(conv.bot_phase):
            await self._pause(previous, turn)
            previous = turn
            if turn.role == "customer":
                await self._say(customer, cid, turn, n, typing=True)
            elif turn.role == "tool":  # before the escalation only the bot looks things up (validation)
                await self._look_up(bot.connection, cid, turn, n)
                result.tool_events += 1
            else:
                visible, _ = await self._say(bot.connection, cid, turn, n, typing=False)

        race: asyncio.Future[tuple[str, Connection, dict[str, Any], float]] = (
            asyncio.get_running_loop().create_future())
        self._races[cid] = race
        escalated = time.perf_counter()
        visible = int((await bot.connection.call(EV_ESCALATE, {"conversation_id": cid, "reason": "replay"}))["seq"])
        try:
            agent_id, agent, claim_ack, claimed_at = await asyncio.wait_for(race, self.config.suggestion_wait_s * 3)
        except TimeoutError:
            raise RuntimeError(f"no agent claimed within {self.config.suggestion_wait_s * 3:.0f} s "
                               f"({len(self._race_losers.get(cid, []))} refused)") from None
        result.claim_ms = (claimed_at - escalated) * 1000
        # Every agent was notified; wait for the others' claims to come back refused (the race's losers).
        for _ in range(200):
            if len(self._race_losers.get(cid, [])) >= len(bot.agents) - 1:
                break
            await asyncio.sleep(0.01)
        codes = self._race_losers.pop(cid, [])
        result.losers, result.loser_codes = len(codes), codes
        result.notification_ms = [(t - escalated) * 1000 for t in self._notified.get(cid, [])]

        # The suggestions that count for an agent turn are those for the latest stored event before it.
        last_seq, last_at = int(claim_ack["seq"]), claimed_at
        visible = last_seq
        first_reply, held = True, True
        offset = conv.escalation_index
        for j, turn in enumerate(conv.agent_phase):
            index = offset + j
            await self._pause(previous, turn)
            previous = turn
            if turn.role == "customer":
                last_seq, last_at = await self._say(customer, cid, turn, index, typing=True)
            elif turn.role == "agent":
                row = await self._suggestions_row(conv, index, turn, agent, agent_id, cid, last_seq, last_at, bot)
                result.rows.append(row)
                if row["suggestions_received"]:
                    result.suggestion_ms.append(row["latency_ms"])
                last_seq, last_at = await self._say(agent, cid, turn, index, typing=True)
                visible = last_seq
                if first_reply:
                    result.first_agent_reply_ms = (time.perf_counter() - escalated) * 1000
                    first_reply = False
            elif turn.maker == "agent":  # the agent's lookup: stored with the next seq, suggestions follow it
                last_seq, last_at = await self._look_up(agent, cid, turn, index)
                result.tool_events += 1
            else:  # the bot speaks or looks up again only after the agent handed the conversation back
                if held:
                    visible = int((await agent.call(EV_HAND_BACK, {"conversation_id": cid, "note": "replay"}))["seq"])
                    held = False
                if turn.role == "tool":
                    last_seq, last_at = await self._look_up(bot.connection, cid, turn, index)
                    result.tool_events += 1
                else:
                    last_seq, last_at = await self._say(bot.connection, cid, turn, index, typing=False)
                    visible = last_seq

        if held and conv.outcome == "handed_back":
            visible = int((await agent.call(EV_HAND_BACK, {"conversation_id": cid, "note": "replay"}))["seq"])
        elif held:  # resolved, and abandoned (the customer left; the agent closes the thread)
            visible = int((await agent.call(EV_RESOLVE, {"conversation_id": cid}))["seq"])
        # Events reach a connection in seq order: once the customer has the last one meant for it, it has every
        # event the server ever sent it for this conversation (what ``customer_received`` counts).
        if await customer.wait_for(cid, None, lambda d: int(d.get("seq", 0)) >= visible,
                                   self.config.suggestion_wait_s) is None:
            raise RuntimeError(f"the customer never received seq {visible}")

    async def _suggestions_row(self, conv: Conversation, index: int, turn: Turn, agent: Connection, agent_id: str,
                               cid: str, for_seq: int, since: float, bot: _Bot) -> dict[str, Any]:
        got: Received | None = None
        if self.config.expect_suggestions and not bot.degraded:
            got = await agent.wait_for(cid, EV_SUGGESTIONS, lambda d: int(d.get("for_seq", -1)) == for_seq,
                                       self.config.suggestion_wait_s)
            if got is None:
                bot.degraded = True
                log.warning("no suggestions for chatbot %s within %.1f s: not waiting for them any more",
                            conv.chatbot, self.config.suggestion_wait_s)
        items = [Suggestion(i["text"], float(i["score"]), i.get("label")) for i in (got.data["items"] if got else [])]
        strategy = self.config.strategy_id or (str(got.data.get("strategy")) if got else "none")
        row = prediction_row(strategy=strategy, chatbot=conv.chatbot, conversation_id=conv.conversation_id,
                             turn_index=index, truth_label=turn.label, truth_text=turn.text, suggestions=items,
                             latency_ms=(got.at - since) * 1000 if got else float("nan"))
        row.update(for_seq=for_seq, agent_id=agent_id, suggestions_received=got is not None)
        return row

    # -- many conversations ---------------------------------------------------------------------------------------

    async def replay_all(self, conversations: Sequence[Conversation], *, progress: bool = True
                         ) -> list[ConversationResult]:
        queue: asyncio.Queue[Conversation] = asyncio.Queue()
        for conv in conversations:
            queue.put_nowait(conv)
        results: list[ConversationResult] = []
        bar = tqdm(total=len(conversations), desc="replay", unit="conv", disable=not progress)

        async def worker() -> None:
            while True:
                try:
                    conv = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results.append(await self.replay_one(conv))
                bar.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, self.config.concurrency))))
        finally:
            bar.close()
        order = {c.conversation_id: i for i, c in enumerate(conversations)}
        return sorted(results, key=lambda r: order.get(r.conversation_id, 0))
