"""Who is who: bots, agents, their keys and tokens, agents' devices, and each bot's ladder settings.

Admin and HTTP-only operations. Keys and tokens are returned once and stored only as hashes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from copilot.live.protocol import (
    ERR_CONFLICT,
    ERR_FORBIDDEN,
    ERR_INVALID_PAYLOAD,
    ERR_NOT_FOUND,
    ROLE_ADMIN,
    ROLE_AGENT,
    ROLE_BOT,
)
from handoff import payloads as p
from handoff.auth import Principal, hash_token, new_token
from handoff.errors import HandoffError
from handoff.ladder import LadderConfig
from handoff.rules import write_retrying
from handoff.store import IntegrityError, Store, Tx


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else ""


class DirectoryService:
    """Bots, agents, credentials and devices over a Store.

    Args:
        store: the database.
        ladder: the server's default unclaimed-escalation ladder (a bot's own settings override it).
    """

    def __init__(self, store: Store, ladder: LadderConfig) -> None:
        self.store = store
        self.ladder = ladder

    async def _create(self, op: Callable[[Tx], Coroutine[Any, Any, None]], conflict: str) -> None:
        try:
            await self.store.write(op)
        except IntegrityError:
            raise HandoffError(ERR_CONFLICT, conflict) from None

    async def create_bot(self, data: p.BotIn) -> dict[str, Any]:
        """Register a bot; its API key is returned once and stored only hashed."""
        key = new_token()

        async def op(tx: Tx) -> None:
            if await tx.bots.get(data.bot_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"bot {data.bot_id!r} exists already")
            await tx.bots.insert(data.bot_id, data.name, data.handback_webhook, data.ladder)
            await tx.credentials.add(hash_token(key), ROLE_BOT, data.bot_id)

        await self._create(op, f"bot {data.bot_id!r} exists already")
        return {"bot_id": data.bot_id, "api_key": key}

    async def create_agent(self, data: p.AgentIn) -> dict[str, Any]:
        """Register an agent for some bots; its token is returned once and stored only hashed."""
        token = new_token()

        async def op(tx: Tx) -> None:
            if await tx.agents.get(data.agent_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"agent {data.agent_id!r} exists already")
            await _require_bots(tx, data, "agent: unknown bot(s) {}")
            await tx.agents.insert(data.agent_id, data.name, data.bots)
            await tx.credentials.add(hash_token(token), ROLE_AGENT, data.agent_id)

        await self._create(op, f"agent {data.agent_id!r} exists already")
        return {"agent_id": data.agent_id, "token": token}

    async def upsert_bot(self, data: p.BotIn, api_key: str) -> None:
        """Create or update a bot declared in the pilot file; ``api_key`` becomes its only key."""
        async def op(tx: Tx) -> None:
            if await tx.bots.get(data.bot_id) is None:
                await tx.bots.insert(data.bot_id, data.name, data.handback_webhook, data.ladder)
            else:
                await tx.bots.update(data.bot_id, data.name, data.handback_webhook, data.ladder)
            await tx.credentials.drop(ROLE_BOT, data.bot_id)
            await tx.credentials.add(hash_token(api_key), ROLE_BOT, data.bot_id)

        await self.store.write(op)

    async def upsert_agent(self, data: p.AgentIn, token: str) -> None:
        """Create or update an agent declared in the pilot file; ``token`` becomes its only token."""
        async def op(tx: Tx) -> None:
            await _require_bots(tx, data, f"agent {data.agent_id!r}: unknown bot(s) {{}}")
            if await tx.agents.get(data.agent_id) is None:
                await tx.agents.insert(data.agent_id, data.name, data.bots)
            else:
                await tx.agents.update(data.agent_id, data.name, data.bots)
            await tx.credentials.drop(ROLE_AGENT, data.agent_id)
            await tx.credentials.add(hash_token(token), ROLE_AGENT, data.agent_id)

        await self.store.write(op)

    async def register_device(self, who: Principal, data: p.DeviceIn) -> dict[str, Any]:
        """Store an agent's push subscription or device token. The same one twice: same id."""
        _require_agent(who, "only agents register devices")
        blob = json.dumps(data.subscription, sort_keys=True)
        digest = hash_token(f"{data.kind}\n{blob}")

        async def op(tx: Tx) -> str:
            existing = await tx.devices.by_hash(who.id, digest)
            if existing is not None:
                return existing
            device_id = uuid.uuid4().hex
            await tx.devices.insert(device_id, who.id, data.kind, blob, digest)
            return device_id

        return {"device_id": await write_retrying(self.store, op)}

    async def devices(self, who: Principal) -> dict[str, Any]:
        """The calling agent's registered devices (no keys: the endpoint's origin for Web Push)."""
        _require_agent(who, "only agents have devices")
        async with self.store.read() as tx:
            rows = await tx.devices.of_agent(who.id)
        out = []
        for row in rows:
            item = {"device_id": row["device_id"], "kind": row["kind"], "created_at": row["created_at"]}
            if isinstance(row["subscription"], dict):
                item["endpoint_origin"] = _origin(str(row["subscription"].get("endpoint", "")))
            out.append(item)
        return {"devices": out}

    async def remove_device(self, who: Principal, device_id: str) -> dict[str, Any]:
        """Remove one of the calling agent's devices (it gets no more pushes)."""
        _require_agent(who, "only agents remove devices")
        if not await self.store.write(lambda tx: tx.devices.delete(who.id, device_id)):
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
        if replace and not await self.store.write(lambda tx: tx.bots.set_ladder(bot_id, new)):
            raise HandoffError(ERR_NOT_FOUND, f"no bot {bot_id!r}")
        async with self.store.read() as tx:
            bot = await tx.bots.get(bot_id)
        if bot is None:
            raise HandoffError(ERR_NOT_FOUND, f"no bot {bot_id!r}")
        return {"bot_id": bot_id, "ladder": bot.ladder, "effective": self.ladder.merged(bot.ladder).as_dict()}


def _require_agent(who: Principal, message: str) -> None:
    if who.role != ROLE_AGENT:
        raise HandoffError(ERR_FORBIDDEN, message)


async def _require_bots(tx: Tx, data: p.AgentIn, message: str) -> None:
    """Raise ``invalid_payload`` unless every bot the agent is registered for exists (``message``: {} = the ids)."""
    missing = sorted(set(data.bots) - await tx.bots.existing(data.bots))
    if missing:
        raise HandoffError(ERR_INVALID_PAYLOAD, message.format(", ".join(missing)))
