"""Repositories of what happens in conversations: the conversations, their event log, escalations, suggestions and
feedback, and the webhook outbox.

The conversation's status and owner change only through compare-and-set updates (:meth:`Conversations.advance`,
:meth:`Conversations.claim`): a writer that read an older state matches no row and decides again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from copilot.live.protocol import KIND_CLAIMED, KIND_ESCALATED, KIND_MESSAGE, KIND_TOOL
from handoff.states import Status
from handoff.store.directory import Repository
from handoff.store.execute import (
    ADVANCE,
    CONVERSATION_COLUMNS,
    FIRST_REPLY,
    INSERT_EVENT,
    SELECT_CONVERSATION,
    SELECT_FOR_MESSAGE,
)
from handoff.store.rows import (
    EVENT_FIELDS,
    JSON_FIELDS,
    ConversationRow,
    EscalationRow,
    OutboxRow,
    conversation_row,
    escalation_row,
    event_wire,
    now_iso,
)
from handoff.store.schema import (
    MAX_SEQ,
    conversations,
    escalations,
    events,
    suggestion_feedback,
    suggestions,
    webhook_outbox,
)


class Conversations(Repository):
    """Conversations: status, owner and the last per-conversation seq (table ``conversations``)."""

    async def get(self, conversation_id: str) -> ConversationRow | None:
        row = (await self._x(SELECT_CONVERSATION, {"cid": conversation_id})).first()
        return conversation_row(row) if row else None

    async def for_message(self, conversation_id: str, role: str, sender: str,
                                       client_id: str) -> tuple[ConversationRow | None, int | None]:
        """The conversation, and the seq of this sender's earlier message with ``client_id`` (a resend) if any."""
        params = {"cid": conversation_id, "role": role, "sender": sender, "client_id": client_id}
        row = (await self._x(SELECT_FOR_MESSAGE, params)).first()
        if row is None:
            return None, None
        return conversation_row(row), row.resent_seq

    async def insert(self, conversation_id: str, bot_id: str, status: str, customer_id: str,
                                  customer: dict[str, Any] | None) -> None:
        now = now_iso()
        await self._x(insert(conversations).values(
            conversation_id=conversation_id, bot_id=bot_id, status=status, agent_id=None,
            customer_id=customer_id, customer=json.dumps(customer) if customer is not None else None,
            last_seq=0, reason=None, waiting_since=None, created_at=now, updated_at=now))

    async def of_bots(self, bot_ids: Iterable[str], status: str, limit: int) -> list[ConversationRow]:
        """Conversations of these bots in ``status``, oldest waiting first (the agent's queue)."""
        ids = list(bot_ids)
        if not ids:
            return []
        rows = await self._x(
            select(*CONVERSATION_COLUMNS)
            .where(and_(conversations.c.bot_id.in_(ids), conversations.c.status == status))
            .order_by(conversations.c.waiting_since, conversations.c.created_at, conversations.c.conversation_id)
            .limit(limit))
        return [conversation_row(r) for r in rows]

    async def advance(self, seen: ConversationRow, count: int, *, status: Status | None = None,
                      release_owner: bool = False, reason: str | None = None,
                      waiting_since: str | None = None) -> int | None:
        """Reserve ``count`` sequence numbers, if the conversation is still as ``seen``; optionally move it.

        ``status``: the new status (what the state machine decided); ``release_owner``: the holding agent lets go
        (hand back, resolve); ``reason`` and ``waiting_since``: an escalation's. Setting an owner is not possible
        here: only :meth:`claim` does that. A compare-and-set on (status, agent_id): when another writer changed
        either since ``seen`` was read, no row matches and the caller re-reads and decides again. Returns the first
        reserved seq, or None.
        """
        params = {"cid": seen.conversation_id, "seen_status": seen.status, "seen_agent": seen.agent_id,
                  "count": count, "now": now_iso()}
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status.value
        if release_owner:
            changes["agent_id"] = None
        if reason is not None:
            changes["reason"] = reason
        if waiting_since is not None:
            changes["waiting_since"] = waiting_since
        # Every message takes the plain form, compiled once; state changes add their columns.
        stmt = ADVANCE.values(**changes) if changes else ADVANCE
        last = (await self._x(stmt, params)).scalar_one_or_none()
        return None if last is None else int(last) - count + 1

    async def claim(self, seen: ConversationRow, agent_id: str, status: Status) -> int | None:
        """The one compare-and-set that writes an owner: ``agent_id`` holds the conversation, now in ``status``.

        ``UPDATE ... WHERE status = <seen> AND agent_id IS NULL``: of any number of concurrent claims (threads,
        processes), the database lets exactly one match; every other gets None, re-reads and finds it claimed.
        Returns the claimed event's seq.
        """
        stmt = (
            update(conversations)
            .where(and_(conversations.c.conversation_id == seen.conversation_id,
                        conversations.c.status == seen.status, conversations.c.agent_id.is_(None)))
            .values(status=status.value, agent_id=agent_id, last_seq=conversations.c.last_seq + 1,
                    updated_at=now_iso())
            .returning(conversations.c.last_seq)
        )
        seq = (await self._x(stmt)).scalar_one_or_none()
        return None if seq is None else int(seq)


class Events(Repository):
    """The per-conversation event log, in seq order (table ``events``)."""

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        full = [{"conversation_id": r["conversation_id"], "seq": r["seq"], "kind": r["kind"], "at": r["at"],
                 **{name: _stored(name, r.get(name)) for name in EVENT_FIELDS}} for r in rows]
        await self._x(INSERT_EVENT, full)

    async def after(self, conversation_id: str, after_seq: int, upto_seq: int | None = None, *,
                    hide_tools: bool = False) -> list[dict[str, Any]]:
        """Stored events with ``after_seq < seq [<= upto_seq]``, in order; ``hide_tools``: without tool events (what
        a customer may see)."""
        # seq is a 32-bit column: past its largest value there is nothing to find (PostgreSQL refuses a bigger bound).
        cond = and_(events.c.conversation_id == conversation_id, events.c.seq > min(after_seq, MAX_SEQ))
        if upto_seq is not None:
            cond = and_(cond, events.c.seq <= upto_seq)
        if hide_tools:
            cond = and_(cond, events.c.kind != KIND_TOOL)
        rows = await self._x(select(events).where(cond).order_by(events.c.seq))
        return [event_wire(r) for r in rows]

    async def turns_after(self, conversation_id: str, after_seq: int) -> list[dict[str, Any]]:
        """The messages and tool events after ``after_seq``, in order (what a hand back gives the bot)."""
        rows = await self._x(select(events).where(and_(
            events.c.conversation_id == conversation_id, events.c.seq > after_seq,
            events.c.kind.in_((KIND_MESSAGE, KIND_TOOL)))).order_by(events.c.seq))
        return [event_wire(r) for r in rows]

    async def last_customer_text(self, conversation_id: str) -> str | None:
        row = (await self._x(
            select(events.c.text).where(and_(events.c.conversation_id == conversation_id,
                                             events.c.kind == KIND_MESSAGE, events.c.role == "customer"))
            .order_by(events.c.seq.desc()).limit(1))).first()
        return row.text if row else None

    async def held_before(self, conversation_id: str, agent_id: str) -> bool:
        """Whether this agent ever claimed the conversation (so writing now is a wrong state, not a wrong door)."""
        row = (await self._x(select(events.c.seq).where(and_(
            events.c.conversation_id == conversation_id, events.c.kind == KIND_CLAIMED,
            events.c.sender == agent_id)).limit(1))).first()
        return row is not None

    async def latest_escalation_seq(self, conversation_id: str) -> int | None:
        row = (await self._x(select(func.max(events.c.seq)).where(and_(
            events.c.conversation_id == conversation_id, events.c.kind == KIND_ESCALATED)))).first()
        return None if row is None or row[0] is None else int(row[0])


class Escalations(Repository):
    """One row per escalation: the ladder's plan and progress, and the handoff's timings (``escalations``)."""

    async def insert(self, conversation_id: str, escalated_seq: int, bot_id: str, escalated_at: float,
                                plan: Sequence[tuple[float, str]]) -> None:
        await self._x(insert(escalations).values(
            conversation_id=conversation_id, escalated_seq=escalated_seq, bot_id=bot_id, state="waiting",
            escalated_at=escalated_at, plan=json.dumps([list(p) for p in plan]), next_rung=0,
            due_at=plan[0][0] if plan else None, claimed_at=None, claimed_by=None, first_reply_at=None))

    async def claim(self, conversation_id: str, agent_id: str, now: float) -> float | None:
        """The waiting escalation is claimed: its ladder stops. Returns when it was escalated (None if no row)."""
        row = (await self._x(
            update(escalations).where(and_(escalations.c.conversation_id == conversation_id,
                                           escalations.c.state == "waiting"))
            .values(state="claimed", claimed_at=now, claimed_by=agent_id, due_at=None)
            .returning(escalations.c.escalated_at))).first()
        return None if row is None else float(row[0])

    async def first_reply(self, conversation_id: str, now: float) -> float | None:
        """Mark the claiming agent's first reply; returns when the escalation happened, only the first time."""
        row = (await self._x(FIRST_REPLY, {"cid": conversation_id, "state": "claimed", "now": now})).first()
        return None if row is None else float(row[0])

    async def close(self, conversation_id: str) -> None:
        """The handoff is over (handed back or resolved): a later agent message is no longer a first reply."""
        await self._x(update(escalations).where(and_(escalations.c.conversation_id == conversation_id,
                                                     escalations.c.state != "closed"))
                      .values(state="closed", due_at=None))

    async def get(self, conversation_id: str, escalated_seq: int) -> EscalationRow | None:
        row = (await self._x(select(escalations).where(and_(
            escalations.c.conversation_id == conversation_id,
            escalations.c.escalated_seq == escalated_seq)))).first()
        return escalation_row(row) if row else None

    async def due(self, now: float, limit: int) -> list[EscalationRow]:
        rows = await self._x(select(escalations).where(escalations.c.due_at <= now)
                             .order_by(escalations.c.due_at).limit(limit))
        return [escalation_row(r) for r in rows]

    async def next_due(self) -> float | None:
        row = (await self._x(select(func.min(escalations.c.due_at)))).first()
        return None if row is None or row[0] is None else float(row[0])

    async def advance_rung(self, conversation_id: str, escalated_seq: int, fired: int,
                           due_at: float | None) -> bool:
        """Compare-and-set: rung ``fired`` is done (next: ``fired + 1`` at ``due_at``), if nobody did it first and
        the escalation still waits. Of several processes finding the same due rung, exactly one gets True."""
        result = await self._x(
            update(escalations).where(and_(
                escalations.c.conversation_id == conversation_id, escalations.c.escalated_seq == escalated_seq,
                escalations.c.state == "waiting", escalations.c.next_rung == fired))
            .values(next_rung=fired + 1, due_at=due_at).returning(escalations.c.next_rung))
        return result.first() is not None

    async def end_ladder(self, conversation_id: str, escalated_seq: int) -> None:
        await self._x(update(escalations).where(and_(
            escalations.c.conversation_id == conversation_id, escalations.c.escalated_seq == escalated_seq))
            .values(due_at=None))

    async def recent_claim_times(self, bot_id: str, limit: int) -> list[float]:
        """Seconds from escalation to claim of the bot's latest ``limit`` claimed escalations, newest first."""
        rows = await self._x(
            select((escalations.c.claimed_at - escalations.c.escalated_at).label("waited"))
            .where(and_(escalations.c.bot_id == bot_id, escalations.c.claimed_at.is_not(None)))
            .order_by(escalations.c.claimed_at.desc()).limit(limit))
        return [float(r.waited) for r in rows]

    async def of_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(escalations).where(escalations.c.conversation_id == conversation_id)
                             .order_by(escalations.c.escalated_seq))
        return [dict(r._mapping) for r in rows]


class Suggestions(Repository):
    """Suggestions offered to agents (table ``suggestions``)."""

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._x(insert(suggestions), list(rows))

    async def get(self, suggestion_id: str) -> dict[str, Any] | None:
        row = (await self._x(select(suggestions).where(suggestions.c.suggestion_id == suggestion_id))
               ).first()
        return dict(row._mapping) if row else None

    async def of_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(suggestions).where(suggestions.c.conversation_id == conversation_id)
                                       .order_by(suggestions.c.for_seq, suggestions.c.rank))
        return [dict(r._mapping) for r in rows]

    async def at(self, conversation_id: str, agent_id: str, for_seq: int) -> list[dict[str, Any]]:
        """The suggestions offered to ``agent_id`` for the conversation's state at ``for_seq``, best first."""
        rows = await self._x(select(suggestions).where(
            suggestions.c.conversation_id == conversation_id, suggestions.c.for_seq == for_seq,
            suggestions.c.agent_id == agent_id).order_by(suggestions.c.rank))
        return [dict(r._mapping) for r in rows]


class Feedback(Repository):
    """What agents did with the suggestions they were offered (table ``suggestion_feedback``)."""

    async def insert(self, suggestion_id: str, conversation_id: str, agent_id: str, action: str) -> None:
        await self._x(insert(suggestion_feedback).values(
            suggestion_id=suggestion_id, conversation_id=conversation_id, agent_id=agent_id, action=action,
            at=now_iso()))

    async def of_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(suggestion_feedback).where(
            suggestion_feedback.c.conversation_id == conversation_id).order_by(suggestion_feedback.c.id))
        return [dict(r._mapping) for r in rows]


class Webhooks(Repository):
    """The webhook outbox: delivered at least once, across restarts (table ``webhook_outbox``)."""

    async def enqueue(self, bot_id: str, conversation_id: str, url: str, payload: dict[str, Any],
                      now: float) -> None:
        """A webhook to POST, due at ``now`` (epoch seconds)."""
        await self._x(insert(webhook_outbox).values(
            bot_id=bot_id, conversation_id=conversation_id, url=url, payload=json.dumps(payload),
            state="pending", attempts=0, next_attempt_at=now, locked_until=None, last_error=None,
            created_at=now, delivered_at=None))

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        rows = await self._x(
            select(webhook_outbox).where(and_(
                webhook_outbox.c.state == "pending", webhook_outbox.c.next_attempt_at <= now,
                (webhook_outbox.c.locked_until.is_(None)) | (webhook_outbox.c.locked_until < now)))
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id).limit(limit))
        return [OutboxRow(r.id, r.bot_id, r.conversation_id, r.url, r.payload, r.attempts) for r in rows]

    async def lock(self, outbox_id: int, now: float, until: float) -> bool:
        """Take one delivery for ``until`` (compare-and-set), so two processes never send it at once."""
        result = await self._x(
            update(webhook_outbox).where(and_(
                webhook_outbox.c.id == outbox_id, webhook_outbox.c.state == "pending",
                (webhook_outbox.c.locked_until.is_(None)) | (webhook_outbox.c.locked_until < now)))
            .values(locked_until=until).returning(webhook_outbox.c.id))
        return result.first() is not None

    async def finish(self, outbox_id: int, *, state: str, attempts: int, next_attempt_at: float,
                     error: str | None, now: float) -> None:
        await self._x(update(webhook_outbox).where(webhook_outbox.c.id == outbox_id).values(
            state=state, attempts=attempts, next_attempt_at=next_attempt_at, locked_until=None, last_error=error,
            delivered_at=now if state == "delivered" else None))

    async def of_conversation(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        stmt = select(webhook_outbox).order_by(webhook_outbox.c.id)
        if conversation_id is not None:
            stmt = stmt.where(webhook_outbox.c.conversation_id == conversation_id)
        return [dict(r._mapping) for r in await self._x(stmt)]



def _stored(name: str, value: Any) -> Any:
    """An event field as its column holds it: the JSON objects of a tool event as text."""
    if value is not None and name in JSON_FIELDS:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value
