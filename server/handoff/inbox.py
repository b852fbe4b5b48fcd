"""What a conversation's parties read: an agent's queue, a conversation's stored events, and joining or resuming a
conversation (which subscribes the socket, so what happens next is broadcast to it)."""

from __future__ import annotations

from typing import Any

from copilot.live.protocol import ERR_FORBIDDEN, ROLE_AGENT, ROLE_CUSTOMER
from handoff import payloads as p
from handoff.auth import Principal
from handoff.errors import HandoffError
from handoff.outcomes import Outcome
from handoff.rules import check_party, load, preview
from handoff.store import Store


class InboxService:
    """Reads over a Store; nothing here writes.

    Args:
        store: the database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    async def events(self, who: Principal, conversation_id: str, after_seq: int) -> dict[str, Any]:
        """Stored events after ``after_seq``, for a party of the conversation (GET .../events); a customer gets
        no tool events."""
        async with self.store.read() as tx:
            conv = await load(tx, conversation_id)
            check_party(who, conv)
            return {"events": await tx.events.after(conversation_id, after_seq, hide_tools=who.role == ROLE_CUSTOMER)}

    async def queue(self, who: Principal, status: str, limit: int = 200) -> dict[str, Any]:
        """The agent's queue: conversations of its bots in ``status`` (waiting by default), oldest first."""
        if who.role != ROLE_AGENT:
            raise HandoffError(ERR_FORBIDDEN, "only agents have a queue")
        async with self.store.read() as tx:
            rows = await tx.conversations.of_bots(who.bots, status, limit)
            names = await tx.agents.names(r.agent_id for r in rows if r.agent_id)
            out = []
            for row in rows:
                out.append({
                    "conversation_id": row.conversation_id, "bot_id": row.bot_id, "status": row.status,
                    "agent_id": row.agent_id, "agent_name": names.get(row.agent_id or ""),
                    "reason": row.reason, "waiting_since": row.waiting_since, "last_seq": row.last_seq,
                    "preview": preview(await tx.events.last_customer_text(row.conversation_id)),
                })
        return {"conversations": out}

    async def join(self, who: Principal, data: p.ConversationRef) -> Outcome:
        async with self.store.read() as tx:
            conv = await load(tx, data.conversation_id)
        check_party(who, conv)
        return Outcome(ack={"status": conv.status, "last_seq": conv.last_seq, "agent_id": conv.agent_id},
                       subscribe=(conv.conversation_id, who.role))

    async def resume(self, who: Principal, data: p.ResumeIn) -> Outcome:
        async with self.store.read() as tx:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            missed = await tx.events.after(conv.conversation_id, data.after_seq, hide_tools=who.role == ROLE_CUSTOMER)
        return Outcome(ack={"events": missed, "status": conv.status}, subscribe=(conv.conversation_id, who.role))
