"""The database of one server process: opening and migrating it, and running transactions on it.

SQLite (a file, zero set-up) is the default; PostgreSQL (``postgresql+asyncpg://``) serves several processes.
The schema is created and upgraded by alembic migrations at start-up (:func:`open_store`).

Concurrency, in one sentence per database:
- PostgreSQL: every status change is a guarded ``UPDATE ... WHERE status = :seen`` (compare-and-set); the row
  lock it takes also hands out per-conversation sequence numbers one at a time.
- SQLite: one writer at a time anyway, so the writes of one process go through one writer thread in batches, each
  batch one transaction (each operation inside its own savepoint) and one commit; WAL lets readers go on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from handoff.store.tx import Tx

MIGRATIONS = Path(__file__).parent.parent / "migrations"
_PG_MIGRATION_LOCK = 0x68616E64  # "hand": one process migrates at a time

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
    """A pysqlite engine for ``sqlite:///FILE`` (the server runs SQLite through pysqlite only)."""
    parsed = make_url(url)
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise ValueError(f"unsupported SQLite driver {parsed.drivername!r}: use sqlite:///FILE (the server talks "
                         "to SQLite through Python's own sqlite3 module)")
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

    ``sqlite:///file.db`` gives a :class:`SqliteStore`,
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
        raise ValueError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql+asyncpg://")
    async_engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    try:
        await _migrate_postgres(async_engine)
    except BaseException:
        await async_engine.dispose()
        raise
    return PostgresStore(async_engine)
