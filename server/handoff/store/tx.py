"""One transaction's view of the database: a repository per table, all on the same connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from handoff.store.conversations import Conversations, Escalations, Events, Feedback, Suggestions, Webhooks
from handoff.store.directory import Agents, Bots, Credentials, Devices, PushDeliveries, Secrets
from handoff.store.execute import Executor


class Tx:
    """The repositories of one connection; inside :meth:`Store.write` their statements commit together or not at all.

    ``driver``: the asyncpg connection under ``conn`` (PostgreSQL writes, see ``PostgresStore.write``).
    """

    __slots__ = ("agents", "bots", "conversations", "credentials", "devices", "escalations", "events", "feedback",
                 "push_deliveries", "secrets", "suggestions", "webhooks")

    def __init__(self, conn: AsyncConnection | Connection, driver: Any = None) -> None:
        executor = Executor(conn, driver)
        self.credentials = Credentials(executor)
        self.bots = Bots(executor)
        self.agents = Agents(executor)
        self.devices = Devices(executor)
        self.push_deliveries = PushDeliveries(executor)
        self.secrets = Secrets(executor)
        self.conversations = Conversations(executor)
        self.events = Events(executor)
        self.escalations = Escalations(executor)
        self.suggestions = Suggestions(executor)
        self.feedback = Feedback(executor)
        self.webhooks = Webhooks(executor)
