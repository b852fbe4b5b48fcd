"""Repositories of who is who: credentials, bots, agents, devices, push outcomes and the server's own secrets.

Each repository owns the statements of its table(s) and runs them on the transaction's one connection (the
:class:`~handoff.store.execute.Executor` it is given), so a :class:`~handoff.store.Tx` commits all of them together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update

from handoff.store.execute import Executor
from handoff.store.rows import AgentRow, BotRow, CredentialRow, DeviceRow, now_iso
from handoff.store.schema import agent_bots, agents, bots, credentials, devices, push_deliveries, server_secrets


class Repository:
    """Statements of one table (or a table and its link table) on the transaction's connection."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor.execute


class Credentials(Repository):
    """Every credential, stored as the SHA-256 of its token (table ``credentials``)."""

    async def get(self, token_hash: str) -> CredentialRow | None:
        row = (await self._x(
            select(credentials.c.role, credentials.c.subject_id).where(credentials.c.token_hash == token_hash)
        )).first()
        return CredentialRow(row.role, row.subject_id) if row else None

    async def add(self, token_hash: str, role: str, subject_id: str) -> None:
        await self._x(insert(credentials).values(
            token_hash=token_hash, role=role, subject_id=subject_id, created_at=now_iso()))

    async def drop(self, role: str, subject_id: str) -> None:
        await self._x(credentials.delete().where(
            and_(credentials.c.role == role, credentials.c.subject_id == subject_id)))


class Bots(Repository):
    """Bots and their settings (table ``bots``)."""

    async def get(self, bot_id: str) -> BotRow | None:
        row = (await self._x(select(bots).where(bots.c.bot_id == bot_id))).first()
        if row is None:
            return None
        return BotRow(row.bot_id, row.name, row.handback_webhook, json.loads(row.ladder) if row.ladder else None)

    async def existing(self, bot_ids: Iterable[str]) -> set[str]:
        ids = list(bot_ids)
        if not ids:
            return set()
        rows = await self._x(select(bots.c.bot_id).where(bots.c.bot_id.in_(ids)))
        return {r.bot_id for r in rows}

    async def insert(self, bot_id: str, name: str, handback_webhook: str | None,
                         ladder: dict[str, Any] | None = None) -> None:
        await self._x(insert(bots).values(
            bot_id=bot_id, name=name, handback_webhook=handback_webhook, created_at=now_iso(),
            ladder=json.dumps(ladder) if ladder is not None else None))

    async def update(self, bot_id: str, name: str, handback_webhook: str | None,
                         ladder: dict[str, Any] | None = None) -> None:
        await self._x(update(bots).where(bots.c.bot_id == bot_id).values(
            name=name, handback_webhook=handback_webhook, ladder=json.dumps(ladder) if ladder is not None else None))

    async def set_ladder(self, bot_id: str, ladder: dict[str, Any] | None) -> bool:
        result = await self._x(update(bots).where(bots.c.bot_id == bot_id).values(
            ladder=json.dumps(ladder) if ladder is not None else None).returning(bots.c.bot_id))
        return result.first() is not None


class Agents(Repository):
    """Agents and the bots each serves (tables ``agents``, ``agent_bots``)."""

    async def get(self, agent_id: str) -> AgentRow | None:
        row = (await self._x(select(agents).where(agents.c.agent_id == agent_id))).first()
        if row is None:
            return None
        bot_rows = await self._x(select(agent_bots.c.bot_id).where(agent_bots.c.agent_id == agent_id))
        return AgentRow(row.agent_id, row.name, frozenset(r.bot_id for r in bot_rows))

    async def insert(self, agent_id: str, name: str, bot_ids: Iterable[str]) -> None:
        await self._x(insert(agents).values(agent_id=agent_id, name=name, created_at=now_iso()))
        await self.set_bots(agent_id, bot_ids)

    async def update(self, agent_id: str, name: str, bot_ids: Iterable[str]) -> None:
        await self._x(update(agents).where(agents.c.agent_id == agent_id).values(name=name))
        await self.set_bots(agent_id, bot_ids)

    async def set_bots(self, agent_id: str, bot_ids: Iterable[str]) -> None:
        await self._x(agent_bots.delete().where(agent_bots.c.agent_id == agent_id))
        rows = [{"agent_id": agent_id, "bot_id": b} for b in sorted(set(bot_ids))]
        if rows:
            await self._x(insert(agent_bots), rows)

    async def names(self, agent_ids: Iterable[str]) -> dict[str, str]:
        ids = list(set(agent_ids))
        if not ids:
            return {}
        rows = await self._x(select(agents.c.agent_id, agents.c.name).where(agents.c.agent_id.in_(ids)))
        return {r.agent_id: r.name for r in rows}


class Devices(Repository):
    """Agents' push subscriptions and device tokens (table ``devices``)."""

    async def by_hash(self, agent_id: str, subscription_hash: str) -> str | None:
        row = (await self._x(select(devices.c.device_id).where(and_(
            devices.c.agent_id == agent_id, devices.c.subscription_hash == subscription_hash)))).first()
        return row.device_id if row else None

    async def insert(self, device_id: str, agent_id: str, kind: str, subscription: str,
                            subscription_hash: str) -> None:
        await self._x(insert(devices).values(
            device_id=device_id, agent_id=agent_id, kind=kind, subscription=subscription,
            subscription_hash=subscription_hash, created_at=now_iso()))

    async def of_agent(self, agent_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(devices).where(devices.c.agent_id == agent_id)
                                       .order_by(devices.c.created_at, devices.c.device_id))
        return [{"device_id": r.device_id, "kind": r.kind, "subscription": json.loads(r.subscription),
                 "created_at": r.created_at} for r in rows]

    async def for_bot(self, bot_id: str) -> list[DeviceRow]:
        """Every registered device of every agent registered for the bot (whom an escalation is pushed to)."""
        rows = await self._x(
            select(devices.c.device_id, devices.c.agent_id, devices.c.kind, devices.c.subscription)
            .select_from(devices.join(agent_bots, agent_bots.c.agent_id == devices.c.agent_id))
            .where(agent_bots.c.bot_id == bindparam("bot_id")).order_by(devices.c.device_id),
            {"bot_id": bot_id})
        return [DeviceRow(r.device_id, r.agent_id, r.kind, json.loads(r.subscription)) for r in rows]

    async def delete(self, agent_id: str, device_id: str) -> bool:
        """Remove one of this agent's devices; False when it has no such device."""
        result = await self._x(devices.delete().where(and_(
            devices.c.device_id == device_id, devices.c.agent_id == agent_id)).returning(devices.c.device_id))
        return result.first() is not None

    async def delete_many(self, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)
        if ids:
            await self._x(devices.delete().where(devices.c.device_id.in_(ids)))


class PushDeliveries(Repository):
    """Every push's final outcome (table ``push_deliveries``)."""

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._x(insert(push_deliveries), list(rows))

    async def of_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._x(select(push_deliveries).where(push_deliveries.c.conversation_id == conversation_id)
                             .order_by(push_deliveries.c.id))
        return [dict(r._mapping) for r in rows]


class Secrets(Repository):
    """Secrets the server generates for itself, shared by every process (table ``server_secrets``)."""

    async def get(self, name: str) -> str | None:
        row = (await self._x(select(server_secrets.c.value).where(server_secrets.c.name == name))).first()
        return None if row is None else str(row.value)

    async def insert(self, name: str, value: str) -> None:
        await self._x(insert(server_secrets).values(name=name, value=value, created_at=now_iso()))

