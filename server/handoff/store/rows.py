"""What the repositories return: typed rows, and a stored event as the protocol shows it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    """The current time as ISO 8601 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_time(epoch: float) -> str:
    """Epoch seconds as :func:`now_iso` writes them."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class BotRow:
    bot_id: str
    name: str
    handback_webhook: str | None
    ladder: dict[str, Any] | None = None


@dataclass(frozen=True)
class EscalationRow:
    """One escalation's ladder and timings (table ``escalations``)."""

    conversation_id: str
    escalated_seq: int
    bot_id: str
    state: str
    escalated_at: float
    plan: list[tuple[float, str]]
    next_rung: int
    due_at: float | None
    claimed_at: float | None


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    agent_id: str
    kind: str
    subscription: Any  # the Web Push subscription object, or the FCM/APNs device token


@dataclass(frozen=True)
class AgentRow:
    agent_id: str
    name: str
    bots: frozenset[str]


@dataclass(frozen=True)
class ConversationRow:
    conversation_id: str
    bot_id: str
    status: str
    agent_id: str | None
    customer_id: str
    last_seq: int
    reason: str | None
    waiting_since: str | None
    created_at: str


@dataclass(frozen=True)
class CredentialRow:
    role: str
    subject_id: str


@dataclass(frozen=True)
class OutboxRow:
    id: int
    bot_id: str
    conversation_id: str
    url: str
    payload: str
    attempts: int


EVENT_FIELDS = ("role", "sender", "text", "client_id", "status", "label", "note", "reason", "agent_name", "name",
                "request", "result", "error")
JSON_FIELDS = ("request", "result")  # stored as JSON text, shown as objects


def event_wire(row: Any) -> dict[str, Any]:
    """A stored event as the protocol shows it: always conversation_id, seq, kind, at; other fields when set."""
    out: dict[str, Any] = {"conversation_id": row.conversation_id, "seq": row.seq, "kind": row.kind}
    for name in EVENT_FIELDS:
        value = getattr(row, name)
        if value is not None:
            out[name] = json.loads(value) if name in JSON_FIELDS else value
    out["at"] = row.at
    return out


def escalation_row(row: Any) -> EscalationRow:
    return EscalationRow(row.conversation_id, row.escalated_seq, row.bot_id, row.state, float(row.escalated_at),
                         [(float(at), str(rung)) for at, rung in json.loads(row.plan)], row.next_rung,
                         None if row.due_at is None else float(row.due_at),
                         None if row.claimed_at is None else float(row.claimed_at))


def conversation_row(row: Any) -> ConversationRow:
    return ConversationRow(row.conversation_id, row.bot_id, row.status, row.agent_id, row.customer_id,
                           row.last_seq, row.reason, row.waiting_since, row.created_at)

