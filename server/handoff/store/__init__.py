"""Storage through SQLAlchemy 2: the schema (:mod:`.schema`), a repository per table (:mod:`.directory`,
:mod:`.conversations`) gathered per transaction in :class:`Tx`, and the stores that run transactions
(:mod:`.engines`: SQLite by default, PostgreSQL for several processes).

Use: ``store = await open_store(url)``; ``await store.write(op)`` runs ``op(tx)`` in one transaction;
``async with store.read() as tx`` reads.
"""

from sqlalchemy.exc import IntegrityError

from handoff.store.engines import PostgresStore, SqliteStore, Store, WriteOp, open_store
from handoff.store.rows import (
    AgentRow,
    BotRow,
    ConversationRow,
    CredentialRow,
    DeviceRow,
    EscalationRow,
    OutboxRow,
    event_wire,
    iso_time,
    now_iso,
)
from handoff.store.schema import metadata
from handoff.store.tx import Tx

__all__ = ["AgentRow", "BotRow", "ConversationRow", "CredentialRow", "DeviceRow", "EscalationRow", "IntegrityError",
           "OutboxRow", "PostgresStore", "SqliteStore", "Store", "Tx", "WriteOp", "event_wire", "iso_time", "metadata",
           "now_iso", "open_store"]
