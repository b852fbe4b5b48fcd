"""How statements run: the message path's statements, built and compiled once, and the executor every repository
shares within one transaction.

Constructing SQLAlchemy expressions per call, and SQLAlchemy's execution machinery, cost more than SQLite takes to
run these statements; so the hot ones are compiled once per dialect and sent to the driver directly, inside the
same transaction as everything else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from asyncpg.exceptions import IntegrityConstraintViolationError
from sqlalchemy import Float, Integer, and_, bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from handoff.store.schema import ID, conversations, escalations, events

CONVERSATION_COLUMNS = (
    conversations.c.conversation_id, conversations.c.bot_id, conversations.c.status, conversations.c.agent_id,
    conversations.c.customer_id, conversations.c.last_seq, conversations.c.reason,
    conversations.c.waiting_since, conversations.c.created_at,
)


# Statements of the message path, built once: constructing SQLAlchemy expressions per call costs more than
# SQLite takes to run them.
SELECT_CONVERSATION = select(*CONVERSATION_COLUMNS).where(conversations.c.conversation_id == bindparam("cid"))
ADVANCE = (
    update(conversations)
    .where(and_(conversations.c.conversation_id == bindparam("cid"),
                conversations.c.status == bindparam("seen_status"),
                conversations.c.agent_id.is_not_distinct_from(bindparam("seen_agent", type_=ID))))
    .values(last_seq=conversations.c.last_seq + bindparam("count", type_=Integer), updated_at=bindparam("now"))
    .returning(conversations.c.last_seq)
)
INSERT_EVENT = insert(events)
_resent = events.alias("resent")
# The conversation, and the seq of an earlier message with this client_id if there is one: one statement.
SELECT_FOR_MESSAGE = (
    select(*CONVERSATION_COLUMNS, _resent.c.seq.label("resent_seq"))
    .select_from(conversations.outerjoin(_resent, and_(
        _resent.c.conversation_id == conversations.c.conversation_id, _resent.c.role == bindparam("role"),
        _resent.c.sender == bindparam("sender"), _resent.c.client_id == bindparam("client_id"))))
    .where(conversations.c.conversation_id == bindparam("cid"))
)


# An agent's message: the first one after the claim records the time to first reply (one statement, so the database
# decides "first" even across processes).
FIRST_REPLY = (
    update(escalations)
    .where(and_(escalations.c.conversation_id == bindparam("cid"), escalations.c.state == bindparam("state"),
                escalations.c.first_reply_at.is_(None)))
    .values(first_reply_at=bindparam("now", type_=Float))
    .returning(escalations.c.escalated_at)
)


HOT = (SELECT_CONVERSATION, ADVANCE, SELECT_FOR_MESSAGE, INSERT_EVENT, FIRST_REPLY)


def _hot_sqlite() -> dict[int, str]:
    """The message path's statements as SQLite SQL with named parameters, for running on the driver directly."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect(paramstyle="named")
    return {id(stmt): str(stmt.compile(dialect=dialect, column_keys=[c.name for c in events.c]
                                       if stmt is INSERT_EVENT else None)) for stmt in HOT}


def _hot_postgres() -> dict[int, tuple[str, tuple[str, ...]]]:
    """The same for asyncpg: SQL with $n parameters and the parameter names in their order."""
    from sqlalchemy.dialects.postgresql import asyncpg

    dialect = asyncpg.dialect()
    out = {}
    for stmt in HOT:
        compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in events.c]
                                if stmt is INSERT_EVENT else None)
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
    """The part of SQLAlchemy's Result the repositories use, over rows read from the driver at once."""

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


class Executor:
    """Runs statements on one connection (the transaction's): the message path's statements straight on the driver.

    The connection is an ``AsyncConnection`` (PostgreSQL, asyncpg) or a plain ``Connection`` (SQLite, see
    :class:`~handoff.store.engines.SqliteStore`), whose statements complete without suspending: reads on the event
    loop's thread, writes in the store's writer thread.
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
            if Executor._hot_sqlite is None:
                Executor._hot_sqlite = _hot_sqlite()
        elif driver is not None and Executor._hot_postgres is None:
            Executor._hot_postgres = _hot_postgres()

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        if self._driver is None:
            assert isinstance(self._conn, AsyncConnection)
            return await self._conn.execute(statement, params)
        if isinstance(self._conn, Connection):
            sql = Executor._hot_sqlite.get(id(statement)) if Executor._hot_sqlite is not None else None
            if sql is None:
                return self._conn.execute(statement, params)
            try:
                if isinstance(params, list):
                    self._driver.executemany(sql, params)
                    return _RawResult()
                return _RawResult(cursor=self._driver.execute(sql, params or {}))
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(sql, params, exc) from exc
        hot = Executor._hot_postgres.get(id(statement)) if Executor._hot_postgres is not None else None
        if hot is None:
            return await self._conn.execute(statement, params)
        sql, order = hot
        try:
            if isinstance(params, list):
                await self._driver.executemany(sql, [tuple(p[k] for k in order) for p in params])
                return _RawResult()
            return _RawResult(records=await self._driver.fetch(sql, *(params[k] for k in order)))
        except IntegrityConstraintViolationError as exc:
            raise IntegrityError(sql, params, exc) from exc

