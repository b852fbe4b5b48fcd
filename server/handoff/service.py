"""The handoff service: every rule of the protocol, with no transport in sight (it never imports socketio).

Each operation takes the caller's :class:`~handoff.auth.Principal` and a validated payload, changes the store in
one transaction, and returns an :class:`Outcome`: the acknowledgement for the caller and the broadcasts to send,
addressed to abstract audiences ("the conversation's subscribed customers and agents", "the bot", "agent Y's
sockets", "every agent registered for bot X"). The transport (handoff.delivery) maps audiences to Socket.IO rooms.
A refused operation raises :class:`~handoff.errors.HandoffError` before anything commits, so it changes nothing.

Rules that matter most:
- every change is an event with the next per-conversation seq, stored (committed) before anything is sent;
- status changes follow handoff.states and are compare-and-set updates, so concurrent writers cannot both win;
- a repeated ``client_id`` returns the first seq and stores and sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from copilot.data.context import context_from_events
from copilot.live.protocol import (
    ERR_ALREADY_CLAIMED,
    ERR_CONFLICT,
    ERR_FORBIDDEN,
    ERR_INTERNAL,
    ERR_INVALID_PAYLOAD,
    ERR_NOT_FOUND,
    EV_CLAIMED,
    EV_HANDED_BACK,
    EV_MESSAGE,
    EV_STATUS,
    EV_SUGGESTIONS,
    EV_TYPING,
    KIND_CLAIMED,
    KIND_ESCALATED,
    KIND_HANDED_BACK,
    KIND_MESSAGE,
    KIND_REOPENED,
    KIND_RESOLVED,
    NOTICE_EXPECTED_WAIT,
    PREVIEW_CHARS,
    ROLE_ADMIN,
    ROLE_AGENT,
    ROLE_BOT,
    ROLE_CUSTOMER,
    STATUS_WAITING,
    TYPING_STOP,
    WEBHOOK_UNCLAIMED,
)
from handoff import payloads as p
from handoff.auth import Principal, hash_token, new_token
from handoff.errors import HandoffError
from handoff.ladder import RUNG_FALLBACK, RUNG_RENOTIFY, RUNG_WAIT_NOTICE, LadderConfig, expected_wait
from handoff.metrics import HandoffMetrics
from handoff.notify import EscalationNotice, Notifier
from handoff.states import Action, InvalidTransition, Status, may_write, transition
from handoff.store import ConversationRow, EscalationRow, IntegrityError, Store, Tx, now_iso
from handoff.suggestions import NoSuggestions, SuggestionProvider
from handoff.typing import TypingTracker

log = logging.getLogger(__name__)
T = TypeVar("T")


# -- audiences: who receives a broadcast (mapped to rooms by handoff.delivery) --------------------------------
@dataclass(frozen=True)
class Subscribed:
    """Sockets subscribed to the conversation (by join, claim, resume or an accepted event), of these roles."""

    conversation_id: str
    roles: frozenset[str] = frozenset({ROLE_CUSTOMER, ROLE_AGENT})


@dataclass(frozen=True)
class TheBot:
    """Every connected socket of the bot."""

    bot_id: str


@dataclass(frozen=True)
class AgentSockets:
    """Every connected socket of one agent (phone and browser alike)."""

    agent_id: str


@dataclass(frozen=True)
class BotAgents:
    """Every connected agent registered for the bot."""

    bot_id: str


Audience = Subscribed | TheBot | AgentSockets | BotAgents


@dataclass(frozen=True)
class Broadcast:
    """One server->client event. ``skip_sender``: never to the socket whose event caused it."""

    event: str
    payload: dict[str, Any]
    to: tuple[Audience, ...]
    skip_sender: bool = True


@dataclass(frozen=True)
class SuggestionRequest:
    """Ask the provider for the claiming agent's next reply, as of ``for_seq``."""

    conversation_id: str
    bot_id: str
    agent_id: str
    for_seq: int


@dataclass(frozen=True)
class PreparedSuggestions:
    """A provider's answer, with ids assigned, waiting for the staleness check before it is stored and sent."""

    request: SuggestionRequest
    strategy: str
    rows: list[dict[str, Any]]


@dataclass
class Outcome:
    """What an accepted operation produced.

    Attributes:
        ack: the acknowledgement's fields (the transport adds ``ok: true``).
        broadcasts: events to send, in order, once the change is stored.
        subscribe: (conversation_id, role) the caller's socket subscribes to.
        subscribe_agent: an agent all of whose sockets subscribe to ``subscribe``'s conversation (a won claim).
        suggest: suggestions to compute in the background afterwards.
        webhook_enqueued: a webhook waits in the outbox (wake the deliverer).
        ladder_started: an unclaimed-escalation ladder was scheduled (wake the ladder's loop).
    """

    ack: dict[str, Any] = field(default_factory=dict)
    broadcasts: list[Broadcast] = field(default_factory=list)
    subscribe: tuple[str, str] | None = None
    subscribe_agent: str | None = None
    suggest: SuggestionRequest | None = None
    webhook_enqueued: bool = False
    ladder_started: bool = False


@dataclass
class _Facts:
    """What an operation learned inside its transaction, counted (metrics) only once it committed."""

    bot_id: str = ""
    claimed: bool = False
    reopened: bool = False
    waited_s: float | None = None
    first_reply_s: float | None = None

    def reset(self) -> None:
        """Forget an attempt that will be retried (the service re-runs an operation that lost a race)."""
        self.__init__()  # type: ignore[misc]


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else ""


class _Retry(Exception):
    """The conversation changed between reading and writing; read again and decide again."""


_MAX_ATTEMPTS = 8


def _everyone(conv: ConversationRow) -> tuple[Audience, ...]:
    """The conversation's parties: its subscribed sockets and the bot."""
    return (Subscribed(conv.conversation_id), TheBot(conv.bot_id))


class HandoffService:
    """The protocol's rules over a Store.

    Args:
        store: the database.
        notifier: told about each escalation once it is stored (in-app today; push later).
        provider: the copilot's suggestion provider.
        suggestions_k: how many suggestions to ask for.
        suggestion_timeout_s: abandon a provider call after this long.
        typing: the typing tracker (its clock is ``clock``).
        clock: monotonic seconds, for typing and latency.
        metrics: where handoffs are counted (B13); default: a registry of its own.
        ladder: the server's default unclaimed-escalation ladder (a bot's own settings override it); default: none.
        expected_wait_samples: how many recent times to claim the expected wait is estimated from.
    """

    def __init__(self, store: Store, *, notifier: Notifier, provider: SuggestionProvider, suggestions_k: int = 3,
                 suggestion_timeout_s: float = 10.0, typing: TypingTracker | None = None,
                 clock: Callable[[], float] = time.monotonic, metrics: HandoffMetrics | None = None,
                 ladder: LadderConfig | None = None, expected_wait_samples: int = 50) -> None:
        self.store = store
        self.notifier = notifier
        self.metrics = metrics if metrics is not None else HandoffMetrics()
        self.ladder = ladder if ladder is not None else LadderConfig(None, None, None, None)
        self.expected_wait_samples = expected_wait_samples
        self.provider = provider
        self.suggestions_k = suggestions_k
        self.suggestion_timeout_s = suggestion_timeout_s
        self.typing_tracker = typing or TypingTracker(timeout_s=5.0, throttle_s=1.0)
        self.clock = clock
        # Without a provider there is nothing to compute: skip the background work (and its database reads).
        self.suggesting = not isinstance(provider, NoSuggestions)

    # -- plumbing ----------------------------------------------------------------------------------------
    async def _write(self, op: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``op`` in a transaction, again from the start when a compare-and-set lost to a concurrent writer."""
        for attempt in range(_MAX_ATTEMPTS):
            try:
                return await self.store.write(op)
            except _Retry:
                log.debug("write retried after a concurrent change (attempt %d)", attempt + 1)
            except IntegrityError:
                # Two resends of one client_id raced; the loser re-reads and finds the winner's event.
                log.debug("write retried after a unique-key race (attempt %d)", attempt + 1)
        raise HandoffError(ERR_INTERNAL, "the conversation kept changing; please retry")

    @staticmethod
    async def _load(tx: Tx, conversation_id: str) -> ConversationRow:
        conv = await tx.conversation(conversation_id)
        if conv is None:
            raise HandoffError(ERR_NOT_FOUND, f"no conversation {conversation_id!r}")
        return conv

    @staticmethod
    def _check_party(who: Principal, conv: ConversationRow) -> None:
        """Raise ``forbidden`` unless ``who`` is one of the conversation's parties."""
        if who.role == ROLE_CUSTOMER:
            ok = who.conversation_id == conv.conversation_id
        elif who.role in (ROLE_BOT, ROLE_AGENT):
            ok = conv.bot_id in who.bots
        else:
            ok = False
        if not ok:
            what = "its own conversation" if who.role == ROLE_CUSTOMER else "conversations of its bots"
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} may act only on {what}")

    @staticmethod
    async def _check_holder(tx: Tx, who: Principal, conv: ConversationRow, action: str) -> None:
        """An agent acts on a conversation it holds; else invalid_transition if it held it before, else forbidden."""
        if conv.status == Status.CLAIMED and conv.agent_id == who.id:
            return
        if await tx.held_before(conv.conversation_id, who.id):
            raise InvalidTransition(Status(conv.status), action, "you no longer hold this conversation")
        raise HandoffError(ERR_FORBIDDEN, f"only the agent holding the conversation can {action} it")

    @staticmethod
    def _event(conv: ConversationRow, seq: int, kind: str, who: Principal | None = None, **fields: Any) -> dict:
        event: dict[str, Any] = {"conversation_id": conv.conversation_id, "seq": seq, "kind": kind}
        if who is not None:
            event["role"] = who.role
            event["sender"] = who.id
        event.update({k: v for k, v in fields.items() if v is not None})
        event.setdefault("at", now_iso())
        return event

    @staticmethod
    def _status(conv: ConversationRow, event: dict[str, Any], **extra: Any) -> dict[str, Any]:
        out = {"conversation_id": conv.conversation_id, "status": event["status"], "seq": event["seq"],
               "kind": event["kind"]}
        out.update({k: v for k, v in extra.items() if v is not None})
        return out

    # -- admin and HTTP-only operations ------------------------------------------------------------------
    async def create_bot(self, data: p.BotIn) -> dict[str, Any]:
        """Register a bot; its API key is returned once and stored only hashed."""
        key = new_token()

        async def op(tx: Tx) -> None:
            if await tx.bot(data.bot_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"bot {data.bot_id!r} exists already")
            await tx.insert_bot(data.bot_id, data.name, data.handback_webhook, data.ladder)
            await tx.add_credential(hash_token(key), ROLE_BOT, data.bot_id)

        await self._create(op, f"bot {data.bot_id!r} exists already")
        return {"bot_id": data.bot_id, "api_key": key}

    async def create_agent(self, data: p.AgentIn) -> dict[str, Any]:
        """Register an agent for some bots; its token is returned once and stored only hashed."""
        token = new_token()

        async def op(tx: Tx) -> None:
            if await tx.agent(data.agent_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"agent {data.agent_id!r} exists already")
            missing = sorted(set(data.bots) - await tx.existing_bots(data.bots))
            if missing:
                raise HandoffError(ERR_INVALID_PAYLOAD, f"agent: unknown bot(s) {', '.join(missing)}")
            await tx.insert_agent(data.agent_id, data.name, data.bots)
            await tx.add_credential(hash_token(token), ROLE_AGENT, data.agent_id)

        await self._create(op, f"agent {data.agent_id!r} exists already")
        return {"agent_id": data.agent_id, "token": token}

    async def _create(self, op: Callable[[Tx], Coroutine[Any, Any, None]], conflict: str) -> None:
        try:
            await self.store.write(op)
        except IntegrityError:
            raise HandoffError(ERR_CONFLICT, conflict) from None

    async def upsert_bot(self, data: p.BotIn, api_key: str) -> None:
        """Create or update a bot declared in the pilot file; ``api_key`` becomes its only key."""
        async def op(tx: Tx) -> None:
            if await tx.bot(data.bot_id) is None:
                await tx.insert_bot(data.bot_id, data.name, data.handback_webhook, data.ladder)
            else:
                await tx.update_bot(data.bot_id, data.name, data.handback_webhook, data.ladder)
            await tx.drop_credentials(ROLE_BOT, data.bot_id)
            await tx.add_credential(hash_token(api_key), ROLE_BOT, data.bot_id)

        await self.store.write(op)

    async def upsert_agent(self, data: p.AgentIn, token: str) -> None:
        """Create or update an agent declared in the pilot file; ``token`` becomes its only token."""
        async def op(tx: Tx) -> None:
            missing = sorted(set(data.bots) - await tx.existing_bots(data.bots))
            if missing:
                raise HandoffError(ERR_INVALID_PAYLOAD, f"agent {data.agent_id!r}: unknown bot(s) {missing}")
            if await tx.agent(data.agent_id) is None:
                await tx.insert_agent(data.agent_id, data.name, data.bots)
            else:
                await tx.update_agent(data.agent_id, data.name, data.bots)
            await tx.drop_credentials(ROLE_AGENT, data.agent_id)
            await tx.add_credential(hash_token(token), ROLE_AGENT, data.agent_id)

        await self.store.write(op)

    async def register_device(self, who: Principal, data: p.DeviceIn) -> dict[str, Any]:
        """Store an agent's push subscription or device token. The same one twice: same id."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents register devices")
        blob = json.dumps(data.subscription, sort_keys=True)
        digest = hash_token(f"{data.kind}\n{blob}")

        async def op(tx: Tx) -> str:
            existing = await tx.device_by_hash(who.id, digest)
            if existing is not None:
                return existing
            device_id = uuid.uuid4().hex
            await tx.insert_device(device_id, who.id, data.kind, blob, digest)
            return device_id

        return {"device_id": await self._write(op)}

    async def devices(self, who: Principal) -> dict[str, Any]:
        """The calling agent's registered devices (no keys: the endpoint's origin for Web Push)."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents have devices")
        async with self.store.read() as tx:
            rows = await tx.devices_of(who.id)
        out = []
        for row in rows:
            item = {"device_id": row["device_id"], "kind": row["kind"], "created_at": row["created_at"]}
            if isinstance(row["subscription"], dict):
                item["endpoint_origin"] = _origin(str(row["subscription"].get("endpoint", "")))
            out.append(item)
        return {"devices": out}

    async def remove_device(self, who: Principal, device_id: str) -> dict[str, Any]:
        """Remove one of the calling agent's devices (it gets no more pushes)."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents remove devices")
        if not await self.store.write(lambda tx: tx.delete_device(who.id, device_id)):
            raise HandoffError(ERR_NOT_FOUND, f"you have no device {device_id!r}")
        return {"device_id": device_id, "removed": True}

    async def bot_ladder(self, who: Principal, bot_id: str, new: dict[str, Any] | None = None, *,
                         replace: bool = False) -> dict[str, Any]:
        """Read (or with ``replace``, set) a bot's own ladder settings; for the admin or that bot.

        Returns ``{bot_id, ladder, effective}``: the bot's own settings (null: the server's defaults) and the ladder
        its next escalation gets.
        """
        if who.role not in (ROLE_ADMIN, ROLE_BOT) or (who.role == ROLE_BOT and who.id != bot_id):
            raise HandoffError(ERR_FORBIDDEN, "only the admin or the bot itself may see or change its ladder")
        if replace and not await self.store.write(lambda tx: tx.set_bot_ladder(bot_id, new)):
            raise HandoffError(ERR_NOT_FOUND, f"no bot {bot_id!r}")
        async with self.store.read() as tx:
            bot = await tx.bot(bot_id)
        if bot is None:
            raise HandoffError(ERR_NOT_FOUND, f"no bot {bot_id!r}")
        return {"bot_id": bot_id, "ladder": bot.ladder, "effective": self.ladder.merged(bot.ladder).as_dict()}

    async def create_conversation(self, who: Principal, bot_id: str, data: p.ConversationIn) -> dict[str, Any]:
        """A new conversation of ``bot_id`` in status ``bot``, with a customer token scoped to it."""
        if who.role != ROLE_BOT:
            raise HandoffError(ERR_FORBIDDEN, "only a bot creates its conversations")
        if who.id != bot_id:
            raise HandoffError(ERR_FORBIDDEN, f"this key belongs to bot {who.id!r}, not {bot_id!r}")
        conversation_id = data.conversation_id or uuid.uuid4().hex
        customer_id = str((data.customer or {}).get("id") or conversation_id)
        token = new_token()

        async def op(tx: Tx) -> None:
            if await tx.conversation(conversation_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"conversation {conversation_id!r} exists already")
            await tx.insert_conversation(conversation_id, bot_id, Status.BOT, customer_id, data.customer)
            await tx.add_credential(hash_token(token), ROLE_CUSTOMER, conversation_id)

        await self._create(op, f"conversation {conversation_id!r} exists already")
        return {"conversation_id": conversation_id, "customer_token": token, "status": Status.BOT.value}

    async def events(self, who: Principal, conversation_id: str, after_seq: int) -> dict[str, Any]:
        """Stored events after ``after_seq``, for a party of the conversation (GET .../events)."""
        async with self.store.read() as tx:
            conv = await self._load(tx, conversation_id)
            self._check_party(who, conv)
            return {"events": await tx.events_after(conversation_id, after_seq)}

    async def queue(self, who: Principal, status: str, limit: int = 200) -> dict[str, Any]:
        """The agent's queue: conversations of its bots in ``status`` (waiting by default), oldest first."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents have a queue")
        async with self.store.read() as tx:
            rows = await tx.conversations_of(who.bots, status, limit)
            names = await tx.agent_names(r.agent_id for r in rows if r.agent_id)
            out = []
            for row in rows:
                preview = await tx.last_customer_text(row.conversation_id)
                out.append({
                    "conversation_id": row.conversation_id, "bot_id": row.bot_id, "status": row.status,
                    "agent_id": row.agent_id, "agent_name": names.get(row.agent_id or ""),
                    "reason": row.reason, "waiting_since": row.waiting_since, "last_seq": row.last_seq,
                    "preview": preview[:PREVIEW_CHARS] if preview is not None else None,
                })
        return {"conversations": out}

    async def current_suggestions(self, who: Principal, conversation_id: str) -> dict[str, Any]:
        """The suggestions offered to the holding agent for the conversation's latest state, if any.

        A console that reloaded, or reconnected after suggestions were sent to none of its sockets, shows the
        sidebar again from here. Only a set computed for the latest seq counts (an older one is stale, as in
        ``offer_suggestions``); otherwise ``items`` is empty and ``for_seq`` null.
        """
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents are offered suggestions")
        async with self.store.read() as tx:
            conv = await self._load(tx, conversation_id)
            self._check_party(who, conv)
            await self._check_holder(tx, who, conv, "read the suggestions of")
            rows = await tx.suggestions_at(conversation_id, who.id, conv.last_seq)
        if not rows:
            return {"conversation_id": conversation_id, "for_seq": None, "strategy": None, "items": []}
        return {"conversation_id": conversation_id, "for_seq": conv.last_seq, "strategy": rows[0]["strategy"],
                "items": [self._suggestion_item(r) for r in rows]}

    @staticmethod
    def _suggestion_item(row: dict[str, Any]) -> dict[str, Any]:
        return {"suggestion_id": row["suggestion_id"], "text": row["text"], "score": row["score"],
                **({"label": row["label"]} if row["label"] is not None else {})}

    # -- conversation events -----------------------------------------------------------------------------
    async def join(self, who: Principal, data: p.ConversationRef) -> Outcome:
        async with self.store.read() as tx:
            conv = await self._load(tx, data.conversation_id)
        self._check_party(who, conv)
        return Outcome(ack={"status": conv.status, "last_seq": conv.last_seq, "agent_id": conv.agent_id},
                       subscribe=(conv.conversation_id, who.role))

    async def resume(self, who: Principal, data: p.ResumeIn) -> Outcome:
        async with self.store.read() as tx:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            missed = await tx.events_after(conv.conversation_id, data.after_seq)
        return Outcome(ack={"events": missed, "status": conv.status}, subscribe=(conv.conversation_id, who.role))

    async def message(self, who: Principal, data: p.MessageIn) -> Outcome:
        if data.label is not None and who.role == ROLE_CUSTOMER:
            raise HandoffError(ERR_INVALID_PAYLOAD, "message: a customer message carries no 'label'")

        async def op(tx: Tx) -> Outcome:
            facts.reset()
            conv, resent_seq = await tx.conversation_for_message(data.conversation_id, who.role, who.id,
                                                                 data.client_id)
            if conv is None:
                raise HandoffError(ERR_NOT_FOUND, f"no conversation {data.conversation_id!r}")
            self._check_party(who, conv)
            if resent_seq is not None:  # a resend: same seq, nothing stored or sent again
                return Outcome(ack={"seq": resent_seq, "duplicate": True}, subscribe=(conv.conversation_id, who.role))
            status = Status(conv.status)
            if who.role == ROLE_AGENT:
                await self._check_holder(tx, who, conv, "write to")
            else:
                may_write(who.role, status)
            reopen = who.role == ROLE_CUSTOMER and status == Status.RESOLVED
            new_status = transition(status, Action.REOPEN, who.role) if reopen else status
            changes: dict[str, Any] = {"status": new_status.value} if reopen else {}
            seq = await tx.advance(conv, 2 if reopen else 1, **changes)
            if seq is None:
                raise _Retry
            out = Outcome(subscribe=(conv.conversation_id, who.role))
            stored = []
            if reopen:
                reopened = self._event(conv, seq, KIND_REOPENED, who, status=new_status.value)
                stored.append(reopened)
                out.broadcasts.append(Broadcast(EV_STATUS, self._status(conv, reopened), _everyone(conv)))
                seq += 1
            event = self._event(conv, seq, KIND_MESSAGE, who, text=data.text, client_id=data.client_id,
                                label=data.label)
            stored.append(event)
            await tx.insert_events(stored)
            out.ack = {"seq": seq}
            out.broadcasts.append(Broadcast(EV_MESSAGE, event, self._message_audience(conv, who, new_status)))
            if self.suggesting and new_status == Status.CLAIMED and conv.agent_id:
                out.suggest = SuggestionRequest(conv.conversation_id, conv.bot_id, conv.agent_id, seq)
            if who.role == ROLE_AGENT:
                escalated_at = await tx.first_reply(conv.conversation_id, time.time())
                if escalated_at is not None:
                    facts.first_reply_s = time.time() - escalated_at
            facts.bot_id, facts.reopened = conv.bot_id, reopen
            return out

        facts = _Facts()
        out = await self._write(op)
        if "duplicate" not in out.ack:
            self.metrics.messages.labels(facts.bot_id, who.role).inc()
            if facts.reopened:
                self.metrics.reopenings.labels(facts.bot_id).inc()
            if facts.first_reply_s is not None:
                self.metrics.time_to_first_reply.labels(facts.bot_id).observe(facts.first_reply_s)
            out.broadcasts.extend(self._typing_done(data.conversation_id, who))
        return out

    @staticmethod
    def _message_audience(conv: ConversationRow, who: Principal, status: Status) -> tuple[Audience, ...]:
        aud: list[Audience] = [Subscribed(conv.conversation_id)]
        # The bot hears customers only while it holds the conversation (PROTOCOL: state ``bot``).
        if who.role == ROLE_BOT or (who.role == ROLE_CUSTOMER and status == Status.BOT):
            aud.append(TheBot(conv.bot_id))
        return tuple(aud)

    async def escalate(self, who: Principal, data: p.EscalateIn) -> Outcome:
        """Bot -> waiting: store the transcript turns, then the escalation; tell the bot's agents."""
        if who.role != ROLE_BOT:
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} cannot escalate a conversation")

        async def op(tx: Tx) -> tuple[Outcome, EscalationNotice]:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            target = transition(Status(conv.status), Action.ESCALATE, who.role)
            now = now_iso()
            count = len(data.transcript) + 1
            seq = await tx.advance(conv, count, status=target.value, reason=data.reason, waiting_since=now)
            if seq is None:
                raise _Retry
            stored = []
            for i, turn in enumerate(data.transcript):
                sender = Principal(turn.role, conv.customer_id if turn.role == ROLE_CUSTOMER else conv.bot_id)
                stored.append(self._event(conv, seq + i, KIND_MESSAGE, sender, text=turn.text, label=turn.label,
                                          at=turn.at or now))
            escalated = self._event(conv, seq + count - 1, KIND_ESCALATED, who, status=target.value,
                                    reason=data.reason, at=now)
            stored.append(escalated)
            await tx.insert_events(stored)
            bot = await tx.bot(conv.bot_id)
            escalated_at = time.time()
            plan = self.ladder.merged(bot.ladder if bot else None).plan(escalated_at)
            await tx.insert_escalation(conv.conversation_id, escalated["seq"], conv.bot_id, escalated_at, plan)
            preview = next((t.text for t in reversed(data.transcript) if t.role == ROLE_CUSTOMER), None)
            if preview is None:
                preview = await tx.last_customer_text(conv.conversation_id)
            out = Outcome(ack={"status": target.value, "seq": escalated["seq"]},
                          subscribe=(conv.conversation_id, who.role), ladder_started=bool(plan))
            for event in stored[:-1]:
                out.broadcasts.append(Broadcast(EV_MESSAGE, event, (Subscribed(conv.conversation_id),)))
            out.broadcasts.append(Broadcast(EV_STATUS, self._status(conv, escalated, reason=data.reason),
                                            _everyone(conv)))
            notice = EscalationNotice(conv.conversation_id, conv.bot_id, data.reason,
                                      preview[:PREVIEW_CHARS] if preview is not None else None, now,
                                      escalated["seq"], bot_name=bot.name if bot else conv.bot_id)
            return out, notice

        out, notice = await self._write(op)
        self.metrics.escalations.labels(notice.bot_id).inc()
        await self.notifier.escalated(notice)
        return out

    async def claim(self, who: Principal, data: p.ConversationRef) -> Outcome:
        """First claim wins (Tx.claim's compare-and-set); losers learn who won."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} cannot claim a conversation")

        async def op(tx: Tx) -> Outcome:
            facts.reset()
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            facts.bot_id = conv.bot_id
            seq = await tx.claim(conv.conversation_id, who.id)
            if seq is None:
                now = await self._load(tx, data.conversation_id)
                if now.status == Status.CLAIMED and now.agent_id == who.id:
                    # Claiming what one already holds (a retry after a lost ack) answers as the won claim did.
                    transcript = await tx.events_after(now.conversation_id, 0)
                    return Outcome(ack={"status": now.status, "transcript": transcript},
                                   subscribe=(now.conversation_id, ROLE_AGENT), subscribe_agent=who.id)
                if now.status == Status.CLAIMED and now.agent_id:
                    name = (await tx.agent_names([now.agent_id])).get(now.agent_id, now.agent_id)
                    raise HandoffError(ERR_ALREADY_CLAIMED, f"claimed by {name}",
                                       claimed_by={"agent_id": now.agent_id, "name": name})
                transition(Status(now.status), Action.CLAIM, who.role)  # raises invalid_transition
                raise _Retry  # pragma: no cover - status was waiting again: decide afresh
            event = self._event(conv, seq, KIND_CLAIMED, who, status=Status.CLAIMED.value, agent_name=who.name)
            await tx.insert_events([event])
            escalated_at = await tx.claim_escalation(conv.conversation_id, who.id, time.time())  # stops the ladder
            facts.claimed = True
            if escalated_at is not None:
                facts.waited_s = time.time() - escalated_at
            transcript = await tx.events_after(conv.conversation_id, 0)
            claimed = {"conversation_id": conv.conversation_id, "agent_id": who.id, "agent_name": who.name,
                       "seq": seq}
            return Outcome(
                ack={"status": Status.CLAIMED.value, "transcript": transcript, "seq": seq},
                broadcasts=[
                    Broadcast(EV_CLAIMED, claimed, (BotAgents(conv.bot_id), *_everyone(conv))),
                    Broadcast(EV_STATUS, self._status(conv, event, agent_name=who.name),
                              (Subscribed(conv.conversation_id, frozenset({ROLE_CUSTOMER})), TheBot(conv.bot_id))),
                ],
                subscribe=(conv.conversation_id, ROLE_AGENT), subscribe_agent=who.id,
                suggest=SuggestionRequest(conv.conversation_id, conv.bot_id, who.id, seq) if self.suggesting else None,
            )

        facts = _Facts()
        try:
            out = await self._write(op)
        except HandoffError as exc:
            if exc.code == ERR_ALREADY_CLAIMED and facts.bot_id:
                self.metrics.claim_races_lost.labels(facts.bot_id).inc()
            raise
        if facts.claimed:
            self.metrics.claims.labels(facts.bot_id).inc()
            if facts.waited_s is not None:
                self.metrics.time_to_claim.labels(facts.bot_id).observe(facts.waited_s)
        return out

    async def hand_back(self, who: Principal, data: p.HandBackIn) -> Outcome:
        """Agent -> bot: the bot gets every message since the latest escalation (event and webhook)."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} cannot hand a conversation back")

        async def op(tx: Tx) -> Outcome:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            await self._check_holder(tx, who, conv, Action.HAND_BACK.value)
            target = transition(Status(conv.status), Action.HAND_BACK, who.role)
            seq = await tx.advance(conv, 1, status=target.value, agent_id=None)
            if seq is None:
                raise _Retry
            event = self._event(conv, seq, KIND_HANDED_BACK, who, status=target.value, note=data.note)
            await tx.insert_events([event])
            await tx.close_escalations(conv.conversation_id)
            facts.bot_id = conv.bot_id
            since = await tx.latest_escalation_seq(conv.conversation_id) or 0
            handed = {"conversation_id": conv.conversation_id, "note": data.note,
                      "turns": await tx.messages_after(conv.conversation_id, since), "seq": seq}
            bot = await tx.bot(conv.bot_id)
            out = Outcome(ack={"status": target.value, "seq": seq}, subscribe=(conv.conversation_id, ROLE_AGENT))
            if bot is not None and bot.handback_webhook:
                body = {"event": EV_HANDED_BACK, "bot_id": conv.bot_id, **handed}
                await tx.enqueue_webhook(conv.bot_id, conv.conversation_id, bot.handback_webhook, body)
                out.webhook_enqueued = True
            out.broadcasts = [
                Broadcast(EV_STATUS, self._status(conv, event, note=data.note), _everyone(conv)),
                Broadcast(EV_HANDED_BACK, handed, (TheBot(conv.bot_id),)),
            ]
            return out

        facts = _Facts()
        out = await self._write(op)
        self.metrics.hand_backs.labels(facts.bot_id).inc()
        out.broadcasts.extend(self._typing_done(data.conversation_id, who))
        return out

    async def resolve(self, who: Principal, data: p.ConversationRef) -> Outcome:
        """Close the conversation: the holding agent (claimed) or the bot (bot)."""
        if who.role not in (ROLE_AGENT, ROLE_BOT):
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} cannot resolve a conversation")

        async def op(tx: Tx) -> Outcome:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            if who.role == ROLE_AGENT:
                await self._check_holder(tx, who, conv, Action.RESOLVE.value)
            target = transition(Status(conv.status), Action.RESOLVE, who.role)
            seq = await tx.advance(conv, 1, status=target.value, agent_id=None)
            if seq is None:
                raise _Retry
            event = self._event(conv, seq, KIND_RESOLVED, who, status=target.value)
            await tx.insert_events([event])
            if who.role == ROLE_AGENT:
                await tx.close_escalations(conv.conversation_id)
            facts.bot_id = conv.bot_id
            return Outcome(ack={"status": target.value, "seq": seq},
                           broadcasts=[Broadcast(EV_STATUS, self._status(conv, event),
                                                 _everyone(conv))],
                           subscribe=(conv.conversation_id, who.role))

        facts = _Facts()
        out = await self._write(op)
        self.metrics.resolutions.labels(facts.bot_id).inc()
        out.broadcasts.extend(self._typing_done(data.conversation_id, who))
        return out

    async def typing(self, who: Principal, data: p.TypingIn, holder: str) -> Outcome:
        """Forward a typing indicator to the other side (throttled); ``holder`` is the sending socket."""
        if who.role not in (ROLE_CUSTOMER, ROLE_AGENT):
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} does not send typing indicators")
        async with self.store.read() as tx:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            if who.role == ROLE_AGENT:
                await self._check_holder(tx, who, conv, "type in")
        target: tuple[Audience, ...]
        if who.role == ROLE_AGENT:
            # Only the customer side: never the agent's own other devices or readers on the agent side.
            target = (Subscribed(conv.conversation_id, frozenset({ROLE_CUSTOMER})),)
        else:
            target = (Subscribed(conv.conversation_id, frozenset({ROLE_AGENT})),)
        out = Outcome(subscribe=(conv.conversation_id, who.role))
        key = (conv.conversation_id, who.role, who.id)
        if self.typing_tracker.update(key, data.state, self.clock(), holder, target):
            payload = {"conversation_id": conv.conversation_id, "role": who.role, "state": data.state}
            out.broadcasts.append(Broadcast(EV_TYPING, payload, target))
        return out

    def _typing_done(self, conversation_id: str, who: Principal) -> list[Broadcast]:
        """A sender who just wrote (or left) is no longer typing: tell the others if they were told it was."""
        cleared = self.typing_tracker.clear((conversation_id, who.role, who.id))
        return [self._typing_stop(key, target) for key, target in cleared]

    @staticmethod
    def _typing_stop(key: tuple[str, str, str], target: Any) -> Broadcast:
        payload = {"conversation_id": key[0], "role": key[1], "state": TYPING_STOP}
        return Broadcast(EV_TYPING, payload, target, skip_sender=False)

    def expired_typing(self) -> list[Broadcast]:
        """``stop`` for every indicator whose sender went quiet too long (called by a background loop)."""
        return [self._typing_stop(key, target) for key, target in self.typing_tracker.expire(self.clock())]

    def disconnected(self, holder: str) -> list[Broadcast]:
        """``stop`` for the indicators a socket had started, now that it is gone."""
        return [self._typing_stop(key, target) for key, target in self.typing_tracker.drop_holder(holder)]

    async def feedback(self, who: Principal, data: p.FeedbackIn) -> Outcome:
        """Record what the agent did with one suggestion it was offered (sent as is, edited, ignored)."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents give suggestion feedback")

        async def op(tx: Tx) -> Outcome:
            conv = await self._load(tx, data.conversation_id)
            self._check_party(who, conv)
            offered = await tx.suggestion(data.suggestion_id)
            if offered is None or offered["conversation_id"] != conv.conversation_id:
                raise HandoffError(ERR_NOT_FOUND, f"no suggestion {data.suggestion_id!r} in this conversation")
            if offered["agent_id"] != who.id:
                raise HandoffError(ERR_FORBIDDEN, "this suggestion was offered to another agent")
            await tx.insert_feedback(data.suggestion_id, conv.conversation_id, who.id, data.action)
            return Outcome(subscribe=(conv.conversation_id, who.role))

        return await self._write(op)

    # -- the unclaimed-escalation ladder (B10; handoff.ladder) --------------------------------------------
    async def ladder_step(self, row: EscalationRow) -> Outcome | None:
        """Fire the escalation's due rung, if it is still due and the conversation still waits for this escalation.

        One transaction reads the row, checks the conversation, and moves ``next_rung`` on with a compare-and-set
        (so exactly one process fires a rung); the fallback webhook is written to the outbox in that same
        transaction. The reminder and the wait notice leave after the commit. Returns None when there was nothing
        to do (claimed meanwhile, fired by another process, not due yet).
        """
        now = time.time()
        notice: EscalationNotice | None = None
        fired = ""

        async def op(tx: Tx) -> Outcome | None:
            nonlocal notice, fired
            notice, fired = None, ""
            esc = await tx.escalation(row.conversation_id, row.escalated_seq)
            if esc is None or esc.due_at is None or esc.due_at > now:
                return None
            conv = await tx.conversation(esc.conversation_id)
            if conv is None or conv.status != STATUS_WAITING or esc.next_rung >= len(esc.plan) \
                    or await tx.latest_escalation_seq(conv.conversation_id) != esc.escalated_seq:
                await tx.end_ladder(esc.conversation_id, esc.escalated_seq)  # the escalation is over
                return None
            rung = esc.plan[esc.next_rung][1]
            after = esc.plan[esc.next_rung + 1][0] if esc.next_rung + 1 < len(esc.plan) else None
            if not await tx.advance_rung(esc.conversation_id, esc.escalated_seq, esc.next_rung, after):
                return None  # another process fired it
            fired = rung
            waited = now - esc.escalated_at
            out = Outcome()
            bot = await tx.bot(conv.bot_id)
            preview = await tx.last_customer_text(conv.conversation_id)
            preview = preview[:PREVIEW_CHARS] if preview is not None else None
            if rung == RUNG_RENOTIFY:
                reminders = sum(1 for _, r in esc.plan[: esc.next_rung + 1] if r == RUNG_RENOTIFY)
                notice = EscalationNotice(conv.conversation_id, conv.bot_id, conv.reason, preview,
                                          conv.waiting_since or now_iso(), esc.escalated_seq,
                                          bot_name=bot.name if bot else conv.bot_id, renotify=reminders)
                return out
            samples = await tx.recent_claim_times(conv.bot_id, self.expected_wait_samples)
            expected = expected_wait(samples, waited)
            if rung == RUNG_WAIT_NOTICE:
                payload = {"conversation_id": conv.conversation_id, "status": conv.status,
                           "notice": NOTICE_EXPECTED_WAIT, "expected_wait_s": expected, "waited_s": round(waited, 1),
                           "waiting_since": conv.waiting_since}
                out.broadcasts.append(Broadcast(EV_STATUS, payload, _everyone(conv), skip_sender=False))
            elif rung == RUNG_FALLBACK:
                url = self.ladder.merged(bot.ladder if bot else None).fallback_webhook
                if url:
                    body = {"event": WEBHOOK_UNCLAIMED, "bot_id": conv.bot_id, "conversation_id": conv.conversation_id,
                            "seq": esc.escalated_seq, "reason": conv.reason, "preview": preview,
                            "waiting_since": conv.waiting_since, "waited_s": round(waited, 1),
                            "expected_wait_s": expected}
                    await tx.enqueue_webhook(conv.bot_id, conv.conversation_id, url, body)
                    out.webhook_enqueued = True
            return out

        out = await self._write(op)
        if fired:
            self.metrics.rungs.labels(row.bot_id, fired).inc()
            log.info("ladder: %s of %s@%d fired", fired, row.conversation_id, row.escalated_seq)
        if notice is not None:
            await self.notifier.escalated(notice)
        return out

    # -- the copilot sidebar (background) ----------------------------------------------------------------
    async def _fresh(self, tx: Tx, req: SuggestionRequest) -> ConversationRow | None:
        conv = await tx.conversation(req.conversation_id)
        if conv is None or conv.last_seq != req.for_seq or conv.status != Status.CLAIMED \
                or conv.agent_id != req.agent_id:
            return None
        return conv

    async def compute_suggestions(self, req: SuggestionRequest) -> PreparedSuggestions | None:
        """Ask the provider for the claiming agent's next reply as of ``req.for_seq``; None if stale or none.

        The context comes from the stored events up to ``for_seq`` through ``copilot.context.context_from_events``,
        so it is exactly what offline evaluation sees. Runs in a background task: chat never waits for it.
        """
        async with self.store.read() as tx:
            if await self._fresh(tx, req) is None:
                return None
            stored = await tx.events_after(req.conversation_id, 0, upto_seq=req.for_seq)
        context = context_from_events(req.bot_id, stored)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.provider.suggest(req.bot_id, context, self.suggestions_k),
                                            self.suggestion_timeout_s)
        except TimeoutError:
            log.warning("suggestions for %s@%d took over %.1f s; dropped", req.conversation_id, req.for_seq,
                        self.suggestion_timeout_s)
            return None
        except Exception:
            log.exception("the suggestion provider failed for bot %s", req.bot_id)
            return None
        latency_ms = (time.perf_counter() - started) * 1000.0
        if result is None or not result.items:
            return None
        now = now_iso()
        rows = [{"suggestion_id": uuid.uuid4().hex, "conversation_id": req.conversation_id,
                 "agent_id": req.agent_id, "for_seq": req.for_seq, "strategy": str(result.strategy), "rank": rank,
                 "text": item.text, "label": item.label, "score": float(item.score), "latency_ms": latency_ms,
                 "created_at": now} for rank, item in enumerate(list(result.items)[: self.suggestions_k], start=1)]
        return PreparedSuggestions(req, str(result.strategy), rows)

    async def offer_suggestions(self, prepared: PreparedSuggestions) -> Broadcast | None:
        """Store and address the suggestions, unless the conversation moved past their seq meanwhile (dropped)."""
        req = prepared.request

        async def op(tx: Tx) -> bool:
            if await self._fresh(tx, req) is None:
                return False
            await tx.insert_suggestions(prepared.rows)
            return True

        if not await self.store.write(op):
            return None
        payload = {
            "conversation_id": req.conversation_id, "for_seq": req.for_seq, "strategy": prepared.strategy,
            "items": [self._suggestion_item(r) for r in prepared.rows],
        }
        return Broadcast(EV_SUGGESTIONS, payload, (AgentSockets(req.agent_id),), skip_sender=False)
