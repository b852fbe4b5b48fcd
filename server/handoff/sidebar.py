"""The copilot sidebar: suggestions for the holding agent's next reply, computed in the background, stored with the
seq they were computed for, offered only while still current, and what the agent did with them.

The context comes from the stored events through ``copilot.data.context.context_from_events``, so it is exactly what
offline evaluation sees. Chat never waits for a suggestion: a set that is ready after the conversation moved on is
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from copilot.data.context import context_from_events
from copilot.live.protocol import ERR_FORBIDDEN, ERR_NOT_FOUND, EV_SUGGESTIONS, ROLE_AGENT
from handoff import payloads as p
from handoff.auth import Principal
from handoff.errors import HandoffError
from handoff.outcomes import AgentSockets, Broadcast, Outcome, SuggestionRequest
from handoff.rules import check_holder, check_party, load, write_retrying
from handoff.states import Status
from handoff.store import ConversationRow, Store, Tx, now_iso
from handoff.suggestions import NoSuggestions, SuggestionProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSuggestions:
    """A provider's answer, with ids assigned, waiting for the staleness check before it is stored and sent."""

    request: SuggestionRequest
    strategy: str
    rows: list[dict[str, Any]]


class SidebarService:
    """Suggestions and suggestion feedback over a Store.

    Args:
        store: the database.
        provider: the copilot's suggestion provider.
        k: how many suggestions to ask for.
        timeout_s: abandon a provider call after this long.
    """

    def __init__(self, store: Store, provider: SuggestionProvider, *, k: int = 3, timeout_s: float = 10.0) -> None:
        self.store = store
        self.provider = provider
        self.k = k
        self.timeout_s = timeout_s
        # Without a provider there is nothing to compute: skip the background work (and its database reads).
        self.enabled = not isinstance(provider, NoSuggestions)

    async def current(self, who: Principal, conversation_id: str) -> dict[str, Any]:
        """The suggestions offered to the holding agent for the conversation's latest state, if any.

        A console that reloaded, or reconnected after suggestions were sent to none of its sockets, shows the
        sidebar again from here. Only a set computed for the latest seq counts (an older one is stale, as in
        :meth:`offer`); otherwise ``items`` is empty and ``for_seq`` null.
        """
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents are offered suggestions")
        async with self.store.read() as tx:
            conv = await load(tx, conversation_id)
            check_party(who, conv)
            await check_holder(tx, who, conv, "read the suggestions of")
            rows = await tx.suggestions.at(conversation_id, who.id, conv.last_seq)
        if not rows:
            return {"conversation_id": conversation_id, "for_seq": None, "strategy": None, "items": []}
        return {"conversation_id": conversation_id, "for_seq": conv.last_seq, "strategy": rows[0]["strategy"],
                "items": [_item(r) for r in rows]}

    async def feedback(self, who: Principal, data: p.FeedbackIn) -> Outcome:
        """Record what the agent did with one suggestion it was offered (sent as is, edited, ignored)."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents give suggestion feedback")

        async def op(tx: Tx) -> Outcome:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            offered = await tx.suggestions.get(data.suggestion_id)
            if offered is None or offered["conversation_id"] != conv.conversation_id:
                raise HandoffError(ERR_NOT_FOUND, f"no suggestion {data.suggestion_id!r} in this conversation")
            if offered["agent_id"] != who.id:
                raise HandoffError(ERR_FORBIDDEN, "this suggestion was offered to another agent")
            await tx.feedback.insert(data.suggestion_id, conv.conversation_id, who.id, data.action)
            return Outcome(subscribe=(conv.conversation_id, who.role))

        return await write_retrying(self.store, op)

    async def compute(self, req: SuggestionRequest) -> PreparedSuggestions | None:
        """Ask the provider for the claiming agent's next reply as of ``req.for_seq``; None if stale or none."""
        async with self.store.read() as tx:
            if await _fresh(tx, req) is None:
                return None
            stored = await tx.events.after(req.conversation_id, 0, upto_seq=req.for_seq)
        context = context_from_events(req.bot_id, stored)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.provider.suggest(req.bot_id, context, self.k), self.timeout_s)
        except TimeoutError:
            log.warning("suggestions for %s@%d took over %.1f s; dropped", req.conversation_id, req.for_seq,
                        self.timeout_s)
            return None
        except Exception:
            log.exception("the suggestion provider failed for bot %s", req.bot_id)
            return None
        latency_ms = (time.perf_counter() - started) * 1000.0
        if result is None:  # no strategy serves this bot
            return None
        # An empty answer is sent too: the strategy chose to show nothing (a trigger threshold), and the agent's
        # screen must not keep the suggestions of an earlier message.
        now = now_iso()
        rows = [{"suggestion_id": uuid.uuid4().hex, "conversation_id": req.conversation_id,
                 "agent_id": req.agent_id, "for_seq": req.for_seq, "strategy": str(result.strategy), "rank": rank,
                 "text": item.text, "label": item.label, "score": float(item.score), "latency_ms": latency_ms,
                 "created_at": now} for rank, item in enumerate(list(result.items)[: self.k], start=1)]
        return PreparedSuggestions(req, str(result.strategy), rows)

    async def offer(self, prepared: PreparedSuggestions) -> Broadcast | None:
        """Store and address the suggestions, unless the conversation moved past their seq meanwhile (dropped)."""
        req = prepared.request

        async def op(tx: Tx) -> bool:
            if await _fresh(tx, req) is None:
                return False
            if prepared.rows:
                await tx.suggestions.insert(prepared.rows)
            return True

        if not await self.store.write(op):
            return None
        payload = {
            "conversation_id": req.conversation_id, "for_seq": req.for_seq, "strategy": prepared.strategy,
            "items": [_item(r) for r in prepared.rows],
        }
        return Broadcast(EV_SUGGESTIONS, payload, (AgentSockets(req.agent_id),), skip_sender=False)


async def _fresh(tx: Tx, req: SuggestionRequest) -> ConversationRow | None:
    """The conversation, if it is still as the request saw it: the same seq, claimed by the same agent."""
    conv = await tx.conversations.get(req.conversation_id)
    if conv is None or conv.last_seq != req.for_seq or conv.status != Status.CLAIMED \
            or conv.agent_id != req.agent_id:
        return None
    return conv


def _item(row: dict[str, Any]) -> dict[str, Any]:
    return {"suggestion_id": row["suggestion_id"], "text": row["text"], "score": row["score"],
            **({"label": row["label"]} if row["label"] is not None else {})}
