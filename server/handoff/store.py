"""Storage through SQLAlchemy 2 async: the schema, the engine, and every statement the server runs.

SQLite (a file, zero set-up) is the default; PostgreSQL (``postgresql+asyncpg://``) serves several processes.
The schema is created and upgraded by alembic migrations at start-up (:func:`open_store`); :data:`metadata`
mirrors the latest migration and a test checks that the two agree.

Concurrency, in one sentence per database:
- PostgreSQL: every status change is a guarded ``UPDATE ... WHERE status = :seen`` (compare-and-set); the row
  lock it takes also hands out per-conversation sequence numbers one at a time.
- SQLite: one writer at a time anyway, so writes in one process queue on an asyncio lock instead of spinning
  on ``database is locked``; WAL lets readers go on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable

from copilot.live.protocol import KIND_CLAIMED, KIND_ESCALATED, KIND_MESSAGE, STATUS_WAITING

__all__ = ["DeviceRow", "EscalationRow", "IntegrityError", "PostgresStore", "SqliteStore", "Store", "Tx", "metadata",
           "now_iso", "open_store"]

ID = String(200)
TIME = String(40)  # ISO 8601 in UTC, e.g. 2025-01-31T12:00:00.123Z: exact round trip on every database

metadata = MetaData()

bots = Table(
    "bots", metadata,
    Column("bot_id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("handback_webhook", Text, nullable=True),
    Column("created_at", TIME, nullable=False),
    # The bot's own unclaimed-escalation ladder (JSON, handoff.ladder.LadderConfig); NULL: the server's defaults.
    Column("ladder", Text, nullable=True),
)

agents = Table(
    "agents", metadata,
    Column("agent_id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", TIME, nullable=False),
)

agent_bots = Table(
    "agent_bots", metadata,
    Column("agent_id", ID, ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
    Column("bot_id", ID, ForeignKey("bots.bot_id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("agent_id", "bot_id"),
    Index("ix_agent_bots_bot_id", "bot_id"),
)

# Every credential, hashed (SHA-256 of a random 256-bit token): a database leak does not leak working tokens.
credentials = Table(
    "credentials", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("subject_id", ID, nullable=False),  # bot_id, agent_id or conversation_id
    Column("created_at", TIME, nullable=False),
    Index("ix_credentials_subject", "role", "subject_id"),
)

conversations = Table(
    "conversations", metadata,
    Column("conversation_id", ID, primary_key=True),
    Column("bot_id", ID, ForeignKey("bots.bot_id"), nullable=False),
    Column("status", String(16), nullable=False),
    # The owner. Written only by the claim compare-and-set (Tx.claim) and cleared by hand back / resolve.
    Column("agent_id", ID, nullable=True),
    Column("customer_id", ID, nullable=False),
    Column("customer", Text, nullable=True),  # the JSON object the bot gave at creation
    Column("last_seq", Integer, nullable=False),
    Column("reason", Text, nullable=True),
    Column("waiting_since", TIME, nullable=True),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Index("ix_conversations_bot_status", "bot_id", "status"),
)

events = Table(
    "events", metadata,
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=True),
    Column("sender", ID, nullable=True),
    Column("text", Text, nullable=True),
    Column("client_id", String(200), nullable=True),
    Column("status", String(16), nullable=True),
    Column("label", String(200), nullable=True),
    Column("note", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("agent_name", String(200), nullable=True),
    Column("at", TIME, nullable=False),
    PrimaryKeyConstraint("conversation_id", "seq"),
    # A resent client_id is stored once. NULL client_ids (state events) never collide.
    UniqueConstraint("conversation_id", "role", "sender", "client_id", name="uq_events_client_id"),
)

devices = Table(
    "devices", metadata,
    Column("device_id", String(64), primary_key=True),
    Column("agent_id", ID, ForeignKey("agents.agent_id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subscription", Text, nullable=False),
    Column("subscription_hash", String(64), nullable=False),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("agent_id", "subscription_hash", name="uq_devices_subscription"),
)

suggestions = Table(
    "suggestions", metadata,
    Column("suggestion_id", String(64), primary_key=True),
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("for_seq", Integer, nullable=False),
    Column("strategy", String(200), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("label", String(200), nullable=True),
    Column("score", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index("ix_suggestions_conversation", "conversation_id", "for_seq"),
)

suggestion_feedback = Table(
    "suggestion_feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suggestion_id", String(64), ForeignKey("suggestions.suggestion_id"), nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("action", String(16), nullable=False),
    Column("at", TIME, nullable=False),
    Index("ix_suggestion_feedback_suggestion", "suggestion_id"),
)

# Hand-back webhooks wait here until delivered (at-least-once; handoff.webhooks), so a restart resumes them.
webhook_outbox = Table(
    "webhook_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bot_id", ID, nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),  # epoch seconds
    Column("locked_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    Index("ix_webhook_outbox_due", "state", "next_attempt_at"),
)

# One row per escalation: the unclaimed-escalation ladder's plan and progress (B10) and the handoff's timings (B13).
# A rung is due when ``due_at`` passes; claiming sets ``claimed_at`` and clears ``due_at``, which stops the ladder.
# Times are epoch seconds: they are compared and subtracted, never shown.
escalations = Table(
    "escalations", metadata,
    Column("conversation_id", ID, ForeignKey("conversations.conversation_id"), nullable=False),
    Column("escalated_seq", Integer, nullable=False),
    Column("bot_id", ID, nullable=False),
    Column("state", String(16), nullable=False),  # waiting | claimed | closed
    Column("escalated_at", Float, nullable=False),
    Column("plan", Text, nullable=False),  # JSON [[at, rung], ...]: the ladder's rungs in firing order
    Column("next_rung", Integer, nullable=False),  # index into plan of the next rung to fire
    Column("due_at", Float, nullable=True),  # when that rung fires; NULL: the ladder is over
    Column("claimed_at", Float, nullable=True),
    Column("claimed_by", ID, nullable=True),
    Column("first_reply_at", Float, nullable=True),
    PrimaryKeyConstraint("conversation_id", "escalated_seq"),
    Index("ix_escalations_due", "due_at"),
    Index("ix_escalations_bot_claimed", "bot_id", "claimed_at"),
)

# Every push's final outcome (handoff.push): delivered, expired (the device was removed), failed, or skipped.
push_deliveries = Table(
    "push_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),  # no foreign key: an expired device is deleted, its log stays
    Column("agent_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("conversation_id", ID, nullable=False),
    Column("escalated_seq", Integer, nullable=False),
    Column("renotify", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status", Integer, nullable=True),  # the push service's last HTTP status
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_push_deliveries_conversation", "conversation_id"),
)

# Secrets the server generates for itself and every process must share (the VAPID key when none is configured).
server_secrets = Table(
    "server_secrets", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", TIME, nullable=False),
)

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x68616E64  # "hand": one process migrates at a time


def now_iso() -> str:
    """The current time as ISO 8601 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


_EVENT_FIELDS = ("role", "sender", "text", "client_id", "status", "label", "note", "reason", "agent_name")


def event_wire(row: Any) -> dict[str, Any]:
    """A stored event as the protocol shows it: always conversation_id, seq, kind, at; other fields when set."""
    out: dict[str, Any] = {"conversation_id": row.conversation_id, "seq": row.seq, "kind": row.kind}
    for name in _EVENT_FIELDS:
        value = getattr(row, name)
        if value is not None:
            out[name] = value
    out["at"] = row.at
    return out


def _escalation(row: Any) -> EscalationRow:
    return EscalationRow(row.conversation_id, row.escalated_seq, row.bot_id, row.state, float(row.escalated_at),
                         [(float(at), str(rung)) for at, rung in json.loads(row.plan)], row.next_rung,
                         None if row.due_at is None else float(row.due_at),
                         None if row.claimed_at is None else float(row.claimed_at))


def _conversation(row: Any) -> ConversationRow:
    return ConversationRow(row.conversation_id, row.bot_id, row.status, row.agent_id, row.customer_id,
                           row.last_seq, row.reason, row.waiting_since, row.created_at)


_CONVERSATION_COLUMNS = (
    conversations.c.conversation_id, conversations.c.bot_id, conversations.c.status, conversations.c.agent_id,
    conversations.c.customer_id, conversations.c.last_seq, conversations.c.reason,
    conversations.c.waiting_since, conversations.c.created_at,
)


# Statements of the message path, built once: constructing SQLAlchemy expressions per call costs more than
# SQLite takes to run them.
_SELECT_CONVERSATION = select(*_CONVERSATION_COLUMNS).where(conversations.c.conversation_id == bindparam("cid"))
_ADVANCE = (
    update(conversations)
    .where(and_(conversations.c.conversation_id == bindparam("cid"),
                conversations.c.status == bindparam("seen_status"),
                conversations.c.agent_id.is_not_distinct_from(bindparam("seen_agent", type_=ID))))
    .values(last_seq=conversations.c.last_seq + bindparam("count", type_=Integer), updated_at=bindparam("now"))
    .returning(conversations.c.last_seq)
)
_INSERT_EVENT = insert(events)
_resent = events.alias("resent")
# The conversation, and the seq of an earlier message with this client_id if there is one: one statement.
_SELECT_FOR_MESSAGE = (
    select(*_CONVERSATION_COLUMNS, _resent.c.seq.label("resent_seq"))
    .select_from(conversations.outerjoin(_resent, and_(
        _resent.c.conversation_id == conversations.c.conversation_id, _resent.c.role == bindparam("role"),
        _resent.c.sender == bindparam("sender"), _resent.c.client_id == bindparam("client_id"))))
    .where(conversations.c.conversation_id == bindparam("cid"))
)


# An agent's message: the first one after the claim records the time to first reply (one statement, so the database
# decides "first" even across processes).
_FIRST_REPLY = (
    update(escalations)
    .where(and_(escalations.c.conversation_id == bindparam("cid"), escalations.c.state == bindparam("state"),
                escalations.c.first_reply_at.is_(None)))
    .values(first_reply_at=bindparam("now", type_=Float))
    .returning(escalations.c.escalated_at)
)


_HOT = (_SELECT_CONVERSATION, _ADVANCE, _SELECT_FOR_MESSAGE, _INSERT_EVENT, _FIRST_REPLY)


def _hot_sqlite() -> dict[int, str]:
    """The message path's statements as SQLite SQL with named parameters, for running on the driver directly."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect(paramstyle="named")
    return {id(stmt): str(stmt.compile(dialect=dialect, column_keys=[c.name for c in events.c]
                                       if stmt is _INSERT_EVENT else None)) for stmt in _HOT}


def _hot_postgres() -> dict[int, tuple[str, tuple[str, ...]]]:
    """The same for asyncpg: SQL with $n parameters and the parameter names in their order."""
    from sqlalchemy.dialects.postgresql import asyncpg

    dialect = asyncpg.dialect()
    out = {}
    for stmt in _HOT:
        compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in events.c]
                                if stmt is _INSERT_EVENT else None)
        out[id(stmt)] = (str(compiled), tuple(compiled.positiontup or ()))
    return out


class _Row:
    """A result row read straight from the SQLite driver: by position or by column name, like SQLAlchemy's."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[Any, ...]) -> None:
        self._index = index
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[self._index[name]]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, position: int) -> Any:
        return self._values[position]

    @property
    def _mapping(self) -> dict[str, Any]:
        return {name: self._values[i] for name, i in self._index.items()}


class _RawResult:
    """The part of SQLAlchemy's Result the Tx methods use, over rows read from the driver at once."""

    def __init__(self, cursor: Any = None, records: list[Any] | None = None) -> None:
        self._rows: list[_Row] = []
        if records:  # asyncpg Records
            index = {name: i for i, name in enumerate(records[0].keys())}
            self._rows = [_Row(index, tuple(r)) for r in records]
        elif cursor is not None and cursor.description is not None:  # a sqlite3 cursor
            index = {d[0]: i for i, d in enumerate(cursor.description)}
            self._rows = [_Row(index, values) for values in cursor.fetchall()]

    def first(self) -> _Row | None:
        return self._rows[0] if self._rows else None

    def scalar_one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise ValueError("more than one row")
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Iterator[_Row]:
        return iter(self._rows)


class Tx:
    """Statements on one connection; inside :meth:`Store.write` they commit together or not at all.

    The connection is an ``AsyncConnection`` (PostgreSQL, asyncpg) or a plain ``Connection`` (SQLite, see
    :class:`SqliteStore`), whose statements complete without suspending: reads on the event loop's thread, writes
    in the store's writer thread.
    """

    _hot_sqlite: dict[int, str] | None = None
    _hot_postgres: dict[int, tuple[str, tuple[str, ...]]] | None = None

    def __init__(self, conn: AsyncConnection | Connection, driver: Any = None) -> None:
        """``driver``: the asyncpg connection under ``conn`` (PostgreSQL writes, see PostgresStore.write)."""
        self._conn = conn
        self._driver: Any = driver
        if isinstance(conn, Connection):
            # SQLite: the message path's statements go to the driver directly (microseconds instead of the
            # tens of microseconds SQLAlchemy's execution machinery adds to each), inside the same transaction.
            self._driver = conn.connection.driver_connection
            if Tx._hot_sqlite is None:
                Tx._hot_sqlite = _hot_sqlite()
        elif driver is not None and Tx._hot_postgres is None:
            Tx._hot_postgres = _hot_postgres()

    async def _x(self, statement: Executable, params: Any = None) -> Any:
        if self._driver is None:
            assert isinstance(self._conn, AsyncConnection)
            return await self._conn.execute(statement, params)
        if isinstance(self._conn, Connection):
            sql = Tx._hot_sqlite.get(id(statement)) if Tx._hot_sqlite is not None else None
            if sql is None:
                return self._conn.execute(statement, params)
            try:
                if isinstance(params, list):
                    self._driver.executemany(sql, params)
                    return _RawResult()
                return _RawResult(cursor=self._driver.execute(sql, params or {}))
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(sql, params, exc) from exc
        hot = Tx._hot_postgres.get(id(statement)) if Tx._hot_postgres is not None else None
        if hot is None:
            return await self._conn.execute(statement, params)
        from asyncpg.exceptions import IntegrityConstraintViolationError

        sql, order = hot
        try:
            if isinstance(params, list):
                await self._driver.executemany(sql, [tuple(p[k] for k in order) for p in params])
                return _RawResult()
            return _RawResult(records=await self._driver.fetch(sql, *(params[k] for k in order)))
        except IntegrityConstraintViolationError as exc:
            raise IntegrityError(sql, params, exc) from exc

    # -- bots, agents, credentials -------------------------------------------------------------------------
    async def credential(self, token_hash: str) -> CredentialRow | None:
        row = (await self._x(
            select(credentials.c.role, credentials.c.subject_id).where(credentials.c.token_hash == token_hash)
        )).first()
        return CredentialRow(row.role, row.subject_id) if row else None

    async def add_credential(self, token_hash: str, role: str, subject_id: str) -> None:
        await self._x(insert(credentials).values(
            token_hash=token_hash, role=role, subject_id=subject_id, created_at=now_iso()))

    async def drop_credentials(self, role: str, subject_id: str) -> None:
        await self._x(credentials.delete().where(
            and_(credentials.c.role == role, credentials.c.subject_id == subject_id)))

    async def bot(self, bot_id: str) -> BotRow | None:
        row = (await self._x(select(bots).where(bots.c.bot_id == bot_id))).first()
        if row is None:
            return None
        return BotRow(row.bot_id, row.name, row.handback_webhook, json.loads(row.ladder) if row.ladder else None)

    async def existing_bots(self, bot_ids: Iterable[str]) -> set[str]:
        ids = list(bot_ids)
        if not ids:
            return set()
        rows = await self._x(select(bots.c.bot_id).where(bots.c.bot_id.in_(ids)))
        return {r.bot_id for r in rows}

    async def insert_bot(self, bot_id: str, name: str, handback_webhook: str | None,
                         ladder: dict[str, Any] | None = None) -> None:
        await self._x(insert(bots).values(
            bot_id=bot_id, name=name, handback_webhook=handback_webhook, created_at=now_iso(),
            ladder=json.dumps(ladder) if ladder is not None else None))

    async def update_bot(self, bot_id: str, name: str, handback_webhook: str | None,
                         ladder: dict[str, Any] | None = None) -> None:
        await self._x(update(bots).where(bots.c.bot_id == bot_id).values(
            name=name, handback_webhook=handback_webhook, ladder=json.dumps(ladder) if ladder is not None else None))

    async def set_bot_ladder(self, bot_id: str, ladder: dict[str, Any] | None) -> bool:
        result = await self._x(update(bots).where(bots.c.bot_id == bot_id).values(
            ladder=json.dumps(ladder) if ladder is not None else None).returning(bots.c.bot_id))
        return result.first() is not None

    async def agent(self, agent_id: str) -> AgentRow | None:
        row = (await self._x(select(agents).where(agents.c.agent_id == agent_id))).first()
        if row is None:
            return None
        bot_rows = await self._x(select(agent_bots.c.bot_id).where(agent_bots.c.agent_id == agent_id))
        return AgentRow(row.agent_id, row.name, frozenset(r.bot_id for r in bot_rows))

    async def insert_agent(self, agent_id: str, name: str, bot_ids: Iterable[str]) -> None:
        await self._x(insert(agents).values(agent_id=agent_id, name=name, created_at=now_iso()))
        await self.set_agent_bots(agent_id, bot_ids)

    async def update_agent(self, agent_id: str, name: str, bot_ids: Iterable[str]) -> None:
        await self._x(update(agents).where(agents.c.agent_id == agent_id).values(name=name))
        await self.set_agent_bots(agent_id, bot_ids)

    async def set_agent_bots(self, agent_id: str, bot_ids: Iterable[str]) -> None:
        await self._x(agent_bots.delete().where(agent_bots.c.agent_id == agent_id))
        rows = [{"agent_id": agent_id, "bot_id": b} for b in sorted(set(bot_ids))]
        if rows:
            await self._x(insert(agent_bots), rows)

    async def agent_names(self, agent_ids: Iterable[str]) -> dict[str, str]:
        ids = list(set(agent_ids))
        if not ids:
            return {}
        rows = await self._x(select(agents.c.agent_id, agents.c.name).where(agents.c.agent_id.in_(ids)))
        return {r.agent_id: r.name for r in rows}

    # -- conversations ------------------------------------------------------------------------------------
    async def conversation(self, conversation_id: str) -> ConversationRow | None:
        row = (await self._x(_SELECT_CONVERSATION, {"cid": conversation_id})).first()
        return _conversation(row) if row else None

    async def conversation_for_message(self, conversation_id: str, role: str, sender: str,
                                       client_id: str) -> tuple[ConversationRow | None, int | None]:
        """The conversation, and the seq of this sender's earlier message with ``client_id`` (a resend) if any."""
        params = {"cid": conversation_id, "role": role, "sender": sender, "client_id": client_id}
        row = (await self._x(_SELECT_FOR_MESSAGE, params)).first()
        if row is None:
            return None, None
        return _conversation(row), row.resent_seq

    async def insert_conversation(self, conversation_id: str, bot_id: str, status: str, customer_id: str,
                                  customer: dict[str, Any] | None) -> None:
        now = now_iso()
        await self._x(insert(conversations).values(
            conversation_id=conversation_id, bot_id=bot_id, status=status, agent_id=None,
            customer_id=customer_id, customer=json.dumps(customer) if customer is not None else None,
            last_seq=0, reason=None, waiting_since=None, created_at=now, updated_at=now))

    async def conversations_of(self, bot_ids: Iterable[str], status: str, limit: int) -> list[ConversationRow]:
        """Conversations of these bots in ``status``, oldest waiting first (the agent's queue)."""
        ids = list(bot_ids)
        if not ids:
            return []
        rows = await self._x(
            select(*_CONVERSATION_COLUMNS)
            .where(and_(conversations.c.bot_id.in_(ids), conversations.c.status == status))
            .order_by(conversations.c.waiting_since, conversations.c.created_at, conversations.c.conversation_id)
            .limit(limit))
        return [_conversation(r) for r in rows]

    async def advance(self, seen: ConversationRow, count: int, **changes: Any) -> int | None:
        """Reserve ``count`` sequence numbers and apply ``changes``, if the conversation is still as ``seen``.

        A compare-and-set on (status, agent_id): when another writer changed either since ``seen`` was read, no
        row matches and the caller re-reads and decides again. Returns the first reserved seq, or None.
        """
        params = {"cid": seen.conversation_id, "seen_status": seen.status, "seen_agent": seen.agent_id,
                  "count": count, "now": now_iso()}
        # Every message takes the plain form, compiled once; state changes add their columns.
        stmt = _ADVANCE.values(**changes) if changes else _ADVANCE
        last = (await self._x(stmt, params)).scalar_one_or_none()
        return None if last is None else int(last) - count + 1

    async def claim(self, conversation_id: str, agent_id: str) -> int | None:
        """First claim wins: the one compare-and-set that writes an owner. Returns the claimed event's seq.

        ``UPDATE ... WHERE status = 'waiting'``: of any number of concurrent claims (threads, processes), the
        database lets exactly one match; every other sees the row already claimed and gets None.
        """
        stmt = (
            update(conversations)
            .where(and_(conversations.c.conversation_id == conversation_id,
                        conversations.c.status == STATUS_WAITING))
            .values(status="claimed", agent_id=agent_id, last_seq=conversations.c.last_seq + 1,
                    updated_at=now_iso())
            .returning(conversations.c.last_seq)
        )
        seq = (await self._x(stmt)).scalar_one_or_none()
        return None if seq is None else int(seq)

    # -- events -------------------------------------------------------------------------------------------
    async def insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        full = [{"conversation_id": r["conversation_id"], "seq": r["seq"], "kind": r["kind"], "at": r["at"],
                 **{name: r.get(name) for name in _EVENT_FIELDS}} for r in rows]
        await self._x(_INSERT_EVENT, full)

    async def events_after(self, conversation_id: str, after_seq: int,
                           upto_seq: int | None = None) -> list[dict[str, Any]]:
        """Stored events with ``after_seq < seq [<= upto_seq]``, in order."""
        cond = and_(events.c.conversation_id == conversation_id, events.c.seq > after_seq)
        if upto_seq is not None:
            cond = and_(cond, events.c.seq <= upto_seq)
        rows = await self._x(select(events).where(cond).order_by(events.c.seq))
        return [event_wire(r) for r in rows]

    async def messages_after(self, conversation_id: str, after_seq: int) -> list[dict[str, Any]]:
        rows = await self._x(select(events).where(and_(
            events.c.conversation_id == conversation_id, events.c.seq > after_seq,
            events.c.kind == KIND_MESSAGE)).order_by(events.c.seq))
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

    # -- devices --------------------------------------------------------------------------------------------
    async def device_by_hash(self, agent_id: str, subscription_hash: str) -> str | None:
        row = (await self._x(select(devices.c.device_id).where(and_(
            devices.c.agent_id == agent_id, devices.c.subscription_hash == subscription_hash)))).first()
        return row.device_id if row else None

    async def insert_device(self, device_id: str, agent_id: str, kind: str, subscription: str,
                            subscription_hash: str) -> None:
        await self._x(insert(devices).values(
            device_id=device_id, agent_id=agent_id, kind=kind, subscription=subscription,
            subscription_hash=subscription_hash, created_at=now_iso()))

    async def devices_of(self, agent_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(devices).where(devices.c.agent_id == agent_id)
                                       .order_by(devices.c.created_at, devices.c.device_id))
        return [{"device_id": r.device_id, "kind": r.kind, "subscription": json.loads(r.subscription),
                 "created_at": r.created_at} for r in rows]

    async def devices_for_bot(self, bot_id: str) -> list[DeviceRow]:
        """Every registered device of every agent registered for the bot (whom an escalation is pushed to)."""
        rows = await self._x(
            select(devices.c.device_id, devices.c.agent_id, devices.c.kind, devices.c.subscription)
            .select_from(devices.join(agent_bots, agent_bots.c.agent_id == devices.c.agent_id))
            .where(agent_bots.c.bot_id == bindparam("bot_id")).order_by(devices.c.device_id),
            {"bot_id": bot_id})
        return [DeviceRow(r.device_id, r.agent_id, r.kind, json.loads(r.subscription)) for r in rows]

    async def delete_device(self, agent_id: str, device_id: str) -> bool:
        """Remove one of this agent's devices; False when it has no such device."""
        result = await self._x(devices.delete().where(and_(
            devices.c.device_id == device_id, devices.c.agent_id == agent_id)).returning(devices.c.device_id))
        return result.first() is not None

    async def delete_devices(self, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)
        if ids:
            await self._x(devices.delete().where(devices.c.device_id.in_(ids)))

    async def insert_push_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._x(insert(push_deliveries), list(rows))

    async def push_deliveries_for(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(push_deliveries).where(push_deliveries.c.conversation_id == conversation_id)
                             .order_by(push_deliveries.c.id))
        return [dict(r._mapping) for r in rows]

    # -- the unclaimed-escalation ladder and handoff timings ----------------------------------------------
    async def insert_escalation(self, conversation_id: str, escalated_seq: int, bot_id: str, escalated_at: float,
                                plan: Sequence[tuple[float, str]]) -> None:
        await self._x(insert(escalations).values(
            conversation_id=conversation_id, escalated_seq=escalated_seq, bot_id=bot_id, state="waiting",
            escalated_at=escalated_at, plan=json.dumps([list(p) for p in plan]), next_rung=0,
            due_at=plan[0][0] if plan else None, claimed_at=None, claimed_by=None, first_reply_at=None))

    async def claim_escalation(self, conversation_id: str, agent_id: str, now: float) -> float | None:
        """The waiting escalation is claimed: its ladder stops. Returns when it was escalated (None if no row)."""
        row = (await self._x(
            update(escalations).where(and_(escalations.c.conversation_id == conversation_id,
                                           escalations.c.state == "waiting"))
            .values(state="claimed", claimed_at=now, claimed_by=agent_id, due_at=None)
            .returning(escalations.c.escalated_at))).first()
        return None if row is None else float(row[0])

    async def first_reply(self, conversation_id: str, now: float) -> float | None:
        """Mark the claiming agent's first reply; returns when the escalation happened, only the first time."""
        row = (await self._x(_FIRST_REPLY, {"cid": conversation_id, "state": "claimed", "now": now})).first()
        return None if row is None else float(row[0])

    async def close_escalations(self, conversation_id: str) -> None:
        """The handoff is over (handed back or resolved): a later agent message is no longer a first reply."""
        await self._x(update(escalations).where(and_(escalations.c.conversation_id == conversation_id,
                                                     escalations.c.state != "closed"))
                      .values(state="closed", due_at=None))

    async def escalation(self, conversation_id: str, escalated_seq: int) -> EscalationRow | None:
        row = (await self._x(select(escalations).where(and_(
            escalations.c.conversation_id == conversation_id,
            escalations.c.escalated_seq == escalated_seq)))).first()
        return _escalation(row) if row else None

    async def due_escalations(self, now: float, limit: int) -> list[EscalationRow]:
        rows = await self._x(select(escalations).where(escalations.c.due_at <= now)
                             .order_by(escalations.c.due_at).limit(limit))
        return [_escalation(r) for r in rows]

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

    async def escalations_of(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(escalations).where(escalations.c.conversation_id == conversation_id)
                             .order_by(escalations.c.escalated_seq))
        return [dict(r._mapping) for r in rows]

    # -- secrets the server generates ---------------------------------------------------------------------
    async def secret(self, name: str) -> str | None:
        row = (await self._x(select(server_secrets.c.value).where(server_secrets.c.name == name))).first()
        return None if row is None else str(row.value)

    async def insert_secret(self, name: str, value: str) -> None:
        await self._x(insert(server_secrets).values(name=name, value=value, created_at=now_iso()))

    # -- suggestions --------------------------------------------------------------------------------------
    async def insert_suggestions(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._x(insert(suggestions), list(rows))

    async def suggestion(self, suggestion_id: str) -> dict[str, Any] | None:
        row = (await self._x(select(suggestions).where(suggestions.c.suggestion_id == suggestion_id))
               ).first()
        return dict(row._mapping) if row else None

    async def suggestions_for(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(suggestions).where(suggestions.c.conversation_id == conversation_id)
                                       .order_by(suggestions.c.for_seq, suggestions.c.rank))
        return [dict(r._mapping) for r in rows]

    async def suggestions_at(self, conversation_id: str, agent_id: str, for_seq: int) -> list[dict[str, Any]]:
        """The suggestions offered to ``agent_id`` for the conversation's state at ``for_seq``, best first."""
        rows = await self._x(select(suggestions).where(
            suggestions.c.conversation_id == conversation_id, suggestions.c.for_seq == for_seq,
            suggestions.c.agent_id == agent_id).order_by(suggestions.c.rank))
        return [dict(r._mapping) for r in rows]

    async def insert_feedback(self, suggestion_id: str, conversation_id: str, agent_id: str, action: str) -> None:
        await self._x(insert(suggestion_feedback).values(
            suggestion_id=suggestion_id, conversation_id=conversation_id, agent_id=agent_id, action=action,
            at=now_iso()))

    async def feedback_for(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(suggestion_feedback).where(
            suggestion_feedback.c.conversation_id == conversation_id).order_by(suggestion_feedback.c.id))
        return [dict(r._mapping) for r in rows]

    # -- webhook outbox -----------------------------------------------------------------------------------
    async def enqueue_webhook(self, bot_id: str, conversation_id: str, url: str, payload: dict[str, Any]) -> None:
        now = time.time()
        await self._x(insert(webhook_outbox).values(
            bot_id=bot_id, conversation_id=conversation_id, url=url, payload=json.dumps(payload),
            state="pending", attempts=0, next_attempt_at=now, locked_until=None, last_error=None,
            created_at=now, delivered_at=None))

    async def due_webhooks(self, now: float, limit: int) -> list[OutboxRow]:
        rows = await self._x(
            select(webhook_outbox).where(and_(
                webhook_outbox.c.state == "pending", webhook_outbox.c.next_attempt_at <= now,
                (webhook_outbox.c.locked_until.is_(None)) | (webhook_outbox.c.locked_until < now)))
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id).limit(limit))
        return [OutboxRow(r.id, r.bot_id, r.conversation_id, r.url, r.payload, r.attempts) for r in rows]

    async def lock_webhook(self, outbox_id: int, now: float, until: float) -> bool:
        """Take one delivery for ``until`` (compare-and-set), so two processes never send it at once."""
        result = await self._x(
            update(webhook_outbox).where(and_(
                webhook_outbox.c.id == outbox_id, webhook_outbox.c.state == "pending",
                (webhook_outbox.c.locked_until.is_(None)) | (webhook_outbox.c.locked_until < now)))
            .values(locked_until=until).returning(webhook_outbox.c.id))
        return result.first() is not None

    async def finish_webhook(self, outbox_id: int, *, state: str, attempts: int, next_attempt_at: float,
                             error: str | None) -> None:
        await self._x(update(webhook_outbox).where(webhook_outbox.c.id == outbox_id).values(
            state=state, attempts=attempts, next_attempt_at=next_attempt_at, locked_until=None, last_error=error,
            delivered_at=time.time() if state == "delivered" else None))

    async def webhooks(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        stmt = select(webhook_outbox).order_by(webhook_outbox.c.id)
        if conversation_id is not None:
            stmt = stmt.where(webhook_outbox.c.conversation_id == conversation_id)
        return [dict(r._mapping) for r in await self._x(stmt)]


T = TypeVar("T")
WriteOp = Callable[[Tx], Coroutine[Any, Any, T]]


class Store:
    """The database of one server process. Use :func:`open_store` to get one (it migrates the schema)."""

    dialect: str = ""

    async def write(self, op: WriteOp[T]) -> T:
        """Run ``op`` in one transaction and return its result once committed.

        If ``op`` raises, nothing it did is kept and the exception propagates. ``op`` must only await the Tx it
        is given (on SQLite it runs inside a batch with other operations; see SqliteStore).
        """
        raise NotImplementedError

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A connection for reads; never blocks writers (WAL on SQLite, MVCC on PostgreSQL)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class PostgresStore(Store):
    """PostgreSQL through asyncpg: each write is its own transaction on a pooled connection."""

    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, op: WriteOp[T]) -> T:
        # The transaction is asyncpg's own, so the message path's statements can go to asyncpg directly; the
        # other statements go through SQLAlchemy on the same connection, told not to open a second transaction.
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            async with driver.transaction():
                return await op(Tx(conn, driver))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self.engine.connect() as conn:
            yield Tx(conn)

    async def close(self) -> None:
        await self.engine.dispose()


@dataclass
class _Pending:
    op: WriteOp[Any]
    done: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


class SqliteStore(Store):
    """SQLite with one writer per process and group commit.

    Why not aiosqlite: every statement through it is a hop to a thread and back (about 0.2 ms measured here with
    SQLAlchemy), while the statement itself takes microseconds, and a message costs half a dozen statements. Here,
    writes queue up and the writer thread runs each batch as one transaction, each operation inside its own
    SAVEPOINT (so one failing operation rolls back alone), then commits once: one hop and one fsync per batch, and
    SQLite's own work (which releases the GIL) runs beside the event loop. Every caller is answered only after the
    commit that holds its changes. Reads run on the loop's thread: a read statement takes microseconds, and WAL
    lets it go on while the writer writes. SQLite allows one writer at a time anyway: this is the same order,
    without the waiting.
    """

    dialect = "sqlite"
    max_batch = 256

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: stop after what came before
        self._writer: asyncio.Task[None] | None = None
        self._writer_conn: Connection | None = None
        # Its own thread: BEGIN IMMEDIATE may wait for another process's lock (busy_timeout), and must never wait
        # behind other blocking work in the loop's shared executor (nor make it wait).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def write(self, op: WriteOp[T]) -> T:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_loop())
        pending = _Pending(op, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return cast(T, await pending.done)

    async def _write_loop(self) -> None:
        conn = self._writer_conn = self.engine.connect()
        conn.info["writer"] = True
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                await self._run_batch(conn, batch)
        finally:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    item.done.cancel()
            conn.info.pop("writer", None)
            conn.close()
            self._writer_conn = None

    async def _run_batch(self, conn: Connection, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._in_thread(lambda: self._batch(conn, [p.op for p in batch]))
        except BaseException as exc:
            for pending in batch:
                _settle(pending.done, error=exc)
            raise
        for pending, (result, error) in zip(batch, outcomes, strict=True):
            _settle(pending.done, result=result, error=error)

    @staticmethod
    def _batch(conn: Connection, ops: list[WriteOp[Any]]) -> list[tuple[Any, BaseException | None]]:
        """One transaction for a batch of operations, in the writer thread: SQLite's own work (which releases
        the GIL) runs beside the event loop instead of on it, and the commit's fsync waits here."""
        driver = conn.connection.driver_connection
        assert driver is not None
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            driver.execute("BEGIN IMMEDIATE")  # waits (busy_timeout) if another process writes
            for op in ops:
                driver.execute("SAVEPOINT handoff_op")  # so a failing operation rolls back alone
                try:
                    outcomes.append((_run_to_end(op(Tx(conn))), None))
                    driver.execute("RELEASE handoff_op")
                except Exception as exc:
                    driver.execute("ROLLBACK TO handoff_op")
                    driver.execute("RELEASE handoff_op")
                    outcomes.append((None, exc))
            driver.execute("COMMIT")
        except Exception as exc:  # BEGIN or COMMIT failed (disk full, I/O error): nothing of the batch is stored
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            failed: list[tuple[Any, BaseException | None]] = [(None, error or exc) for _, error in outcomes]
            return failed + [(None, exc)] * (len(ops) - len(outcomes))
        finally:
            if conn.in_transaction():
                conn.commit()  # only SQLAlchemy's bookkeeping: the driver's transaction is over
        return outcomes

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        with self.engine.connect() as conn:
            yield Tx(conn)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await self._queue.put(None)  # the writes queued before this one still commit
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)
        self.engine.dispose()


def _run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run a write operation's coroutine to its end, here and now.

    On SQLite every Tx statement completes without suspending, so an operation that only awaits its Tx finishes
    in one step; one that awaited anything else could not run in the writer thread and is refused loudly.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("a write operation awaited something other than its Tx (see Store.write)")


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _sqlite_engine(url: str, synchronous: str) -> Engine:
    """A pysqlite engine (whatever the URL's driver: ``sqlite+aiosqlite://`` is accepted for the default URL)."""
    parsed = make_url(url).set(drivername="sqlite")
    database = parsed.database or ""
    if not database or database == ":memory:":
        raise ValueError("the server needs a SQLite file (several connections share it), not an in-memory database")
    Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    # Reads run on the loop's thread and never wait for a pooled connection (max_overflow=-1): a pool that blocked
    # would block the event loop. They never hold one across an await of anything but the Tx itself.
    engine = sa_create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False}, max_overflow=-1)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by us (below), not by pysqlite's guesswork, so SAVEPOINTs work.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer; busy_timeout: wait for another process's write instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # The writer's transactions are begun and ended by SqliteStore._batch on the driver (BEGIN IMMEDIATE);
        # everyone else gets a consistent snapshot for the length of the block.
        if not conn.info.get("writer"):
            conn.exec_driver_sql("BEGIN")

    return engine


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _migrate_sqlite(engine: Engine) -> None:
    with engine.begin() as conn:
        _upgrade(conn)


async def _migrate_postgres(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        # Two processes starting together must not both create the tables.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        await conn.run_sync(_upgrade)


async def open_store(url: str, *, sqlite_synchronous: str = "FULL") -> Store:
    """Connect to ``url``, bring the schema to the latest migration (alembic), and return the store.

    ``sqlite+aiosqlite:///file.db`` (or ``sqlite:///file.db``) gives a :class:`SqliteStore`,
    ``postgresql+asyncpg://...`` a :class:`PostgresStore`.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(url, sqlite_synchronous)
        try:
            await asyncio.to_thread(_migrate_sqlite, engine)
        except BaseException:
            engine.dispose()
            raise
        return SqliteStore(engine)
    if backend != "postgresql":
        raise ValueError(f"unsupported database {backend!r}: use sqlite+aiosqlite:///FILE or postgresql+asyncpg://")
    async_engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    try:
        await _migrate_postgres(async_engine)
    except BaseException:
        await async_engine.dispose()
        raise
    return PostgresStore(async_engine)
