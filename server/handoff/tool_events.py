"""Tool events: the lookups the bot or the holding agent made for a conversation (a knowledge-base query, an order or
CRM lookup) and what they returned, stored in the conversation's log with the next seq.

They are part of the conversation for the agent side and the copilot, never for a customer: broadcast to the
conversation's subscribed agents and to the bot only, skipped in a customer's ``resume`` and ``GET .../events``, and
included in the claim transcript and the hand-back turns. Who may post follows the message rules (the bot in ``bot``
and ``waiting``, the holding agent in ``claimed``); a repeated ``client_id`` is stored once.
"""

from __future__ import annotations

import uuid

from copilot.live.protocol import ERR_FORBIDDEN, ERR_NOT_FOUND, EV_TOOL_EVENT, KIND_TOOL, ROLE_AGENT, ROLE_BOT
from handoff import payloads as p
from handoff.auth import Principal
from handoff.clock import Clock
from handoff.errors import HandoffError
from handoff.outcomes import Broadcast, Outcome, Subscribed, SuggestionRequest, TheBot, holder_sockets
from handoff.rules import Retry, check_holder, check_party, new_event, write_retrying
from handoff.states import Status, may_write
from handoff.store import Store, Tx, iso_time

AGENT_SIDE = frozenset({ROLE_AGENT})


class ToolEventService:
    """Stores and addresses tool events.

    Args:
        store: the database.
        clock: wall time for the stored time.
        suggesting: whether an agent's tool event asks for new suggestions (what it looked up changes the context).
    """

    def __init__(self, store: Store, *, clock: Clock, suggesting: bool) -> None:
        self.store = store
        self.clock = clock
        self.suggesting = suggesting

    async def post(self, who: Principal, data: p.ToolEventIn) -> Outcome:
        """Store one tool event; its ack is ``{seq}`` (the first seq again for a repeated ``client_id``)."""
        if who.role not in (ROLE_BOT, ROLE_AGENT):
            raise HandoffError(ERR_FORBIDDEN, f"a {who.role} cannot post tool events")
        client_id = data.client_id or uuid.uuid4().hex

        async def op(tx: Tx) -> Outcome:
            conv, resent_seq = await tx.conversations.for_message(data.conversation_id, who.role, who.id, client_id)
            if conv is None:
                raise HandoffError(ERR_NOT_FOUND, f"no conversation {data.conversation_id!r}")
            check_party(who, conv)
            agent_side = (conv.conversation_id, ROLE_AGENT) if who.role == ROLE_AGENT else None
            if resent_seq is not None:
                return Outcome(ack={"seq": resent_seq, "duplicate": True}, subscribe=agent_side)
            if who.role == ROLE_AGENT:
                await check_holder(tx, who, conv, "post a tool event to")
            else:
                may_write(who.role, Status(conv.status))
            seq = await tx.conversations.advance(conv, 1)
            if seq is None:
                raise Retry
            event = new_event(conv, seq, KIND_TOOL, who, iso_time(self.clock.time()), client_id=client_id,
                              name=data.name, request=data.request, result=data.result, error=data.error)
            await tx.events.insert([event])
            audience = (Subscribed(conv.conversation_id, AGENT_SIDE), *holder_sockets(conv.agent_id, conv.status),
                        TheBot(conv.bot_id))
            out = Outcome(ack={"seq": seq}, subscribe=agent_side,
                          broadcasts=[Broadcast(EV_TOOL_EVENT, event, audience)])
            if self.suggesting and conv.status == Status.CLAIMED and conv.agent_id:
                out.suggest = SuggestionRequest(conv.conversation_id, conv.bot_id, conv.agent_id, seq)
            return out

        return await write_retrying(self.store, op)
