"""Conversations: creating them, their messages, and every move of the state machine (escalate, claim, hand back,
resolve, reopen), each in one transaction with the next per-conversation seqs.

Each operation takes the caller's :class:`~handoff.auth.Principal` and a validated payload, checks the caller and
the move (``handoff.states`` decides every move), stores its events, and returns an
:class:`~handoff.outcomes.Outcome`. A refused operation raises :class:`~handoff.errors.HandoffError` before anything
commits, so it changes nothing. Status and owner change only by compare-and-set: a writer that lost to a concurrent
one reads again and decides again (:func:`~handoff.rules.write_retrying`). A repeated ``client_id`` returns the
first seq and stores and sends nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from copilot.live.protocol import (
    ERR_ALREADY_CLAIMED,
    ERR_CONFLICT,
    ERR_FORBIDDEN,
    ERR_INVALID_PAYLOAD,
    ERR_NOT_FOUND,
    EV_CLAIMED,
    EV_HANDED_BACK,
    EV_MESSAGE,
    EV_STATUS,
    KIND_CLAIMED,
    KIND_ESCALATED,
    KIND_HANDED_BACK,
    KIND_MESSAGE,
    KIND_REOPENED,
    KIND_RESOLVED,
    ROLE_AGENT,
    ROLE_BOT,
    ROLE_CUSTOMER,
)
from handoff import payloads as p
from handoff.auth import Principal, hash_token, new_token
from handoff.clock import Clock
from handoff.errors import HandoffError
from handoff.ladder import LadderConfig
from handoff.metrics import HandoffMetrics
from handoff.notify import EscalationNotice, Notifier
from handoff.outcomes import (
    Audience,
    BotAgents,
    Broadcast,
    Outcome,
    Subscribed,
    SuggestionRequest,
    TheBot,
    everyone,
    holder_sockets,
)
from handoff.rules import Retry, check_holder, check_party, load, new_event, preview, status_payload, write_retrying
from handoff.states import Action, Status, may_write, require_role, transition
from handoff.store import ConversationRow, IntegrityError, Store, Tx, iso_time
from handoff.typing import TypingService


@dataclass(frozen=True)
class Committed:
    """What one transaction decided: its outcome, and the facts counted once it committed."""

    outcome: Outcome
    bot_id: str
    reopened: bool = False
    claimed: bool = False
    waited_s: float | None = None
    first_reply_s: float | None = None
    notice: EscalationNotice | None = None
    refusal: HandoffError | None = None  # refused after reading (a lost claim race): raised once counted


class ConversationService:
    """The conversation rules over a Store.

    Args:
        store: the database.
        clock: wall time for stored times and the handoff timings.
        notifier: told about each escalation once it is stored.
        typing: clears a sender's typing indicator once it wrote.
        metrics: where handoffs are counted.
        ladder: the server's default unclaimed-escalation ladder (a bot's own settings override it).
        suggesting: whether claims and messages ask for suggestions (False: no provider).
    """

    def __init__(self, store: Store, *, clock: Clock, notifier: Notifier, typing: TypingService,
                 metrics: HandoffMetrics, ladder: LadderConfig, suggesting: bool) -> None:
        self.store = store
        self.clock = clock
        self.notifier = notifier
        self.typing = typing
        self.metrics = metrics
        self.ladder = ladder
        self.suggesting = suggesting

    def _now(self) -> tuple[float, str]:
        now = self.clock.time()
        return now, iso_time(now)

    async def create_conversation(self, who: Principal, bot_id: str, data: p.ConversationIn) -> dict[str, Any]:
        """A new conversation of ``bot_id`` in status ``bot``, with a customer token scoped to it."""
        if who.role != ROLE_BOT:
            raise HandoffError(ERR_FORBIDDEN, "only a bot creates its conversations")
        if who.id != bot_id:
            raise HandoffError(ERR_FORBIDDEN, f"this key belongs to bot {who.id!r}, not {bot_id!r}")
        conversation_id = data.conversation_id or uuid.uuid4().hex
        customer_id = str((data.customer or {}).get("id") or conversation_id)
        token = new_token()

        async def op(tx: Tx) -> None:
            if await tx.conversations.get(conversation_id) is not None:
                raise HandoffError(ERR_CONFLICT, f"conversation {conversation_id!r} exists already")
            await tx.conversations.insert(conversation_id, bot_id, Status.BOT, customer_id, data.customer)
            await tx.credentials.add(hash_token(token), ROLE_CUSTOMER, conversation_id)

        try:
            await self.store.write(op)
        except IntegrityError:
            raise HandoffError(ERR_CONFLICT, f"conversation {conversation_id!r} exists already") from None
        return {"conversation_id": conversation_id, "customer_token": token, "status": Status.BOT.value}

    # -- messages ------------------------------------------------------------------------------------------
    async def message(self, who: Principal, data: p.MessageIn) -> Outcome:
        if data.label is not None and who.role == ROLE_CUSTOMER:
            raise HandoffError(ERR_INVALID_PAYLOAD, "message: a customer message carries no 'label'")

        async def op(tx: Tx) -> Committed:
            conv, resent_seq = await tx.conversations.for_message(data.conversation_id, who.role, who.id,
                                                                  data.client_id)
            if conv is None:
                raise HandoffError(ERR_NOT_FOUND, f"no conversation {data.conversation_id!r}")
            check_party(who, conv)
            if resent_seq is not None:  # a resend: same seq, nothing stored or sent again
                return Committed(Outcome(ack={"seq": resent_seq, "duplicate": True},
                                         subscribe=(conv.conversation_id, who.role)), conv.bot_id)
            status = Status(conv.status)
            if who.role == ROLE_AGENT:
                await check_holder(tx, who, conv, "write to")
            else:
                may_write(who.role, status)
            reopen = who.role == ROLE_CUSTOMER and status == Status.RESOLVED
            new_status = transition(status, Action.REOPEN, who.role) if reopen else status
            seq = await tx.conversations.advance(conv, 2 if reopen else 1, status=new_status if reopen else None)
            if seq is None:
                raise Retry
            now, at = self._now()
            out = Outcome(subscribe=(conv.conversation_id, who.role))
            stored = []
            if reopen:
                reopened = new_event(conv, seq, KIND_REOPENED, who, at, status=new_status.value)
                stored.append(reopened)
                out.broadcasts.append(Broadcast(EV_STATUS, status_payload(conv, reopened),
                                                everyone(conv.conversation_id, conv.bot_id)))
                seq += 1
            event = new_event(conv, seq, KIND_MESSAGE, who, at, text=data.text, client_id=data.client_id,
                              label=data.label)
            stored.append(event)
            await tx.events.insert(stored)
            out.ack = {"seq": seq}
            out.broadcasts.append(Broadcast(EV_MESSAGE, event, _message_audience(conv, who, new_status)))
            if self.suggesting and new_status == Status.CLAIMED and conv.agent_id:
                out.suggest = SuggestionRequest(conv.conversation_id, conv.bot_id, conv.agent_id, seq)
            first_reply_s = None
            if who.role == ROLE_AGENT:
                escalated_at = await tx.escalations.first_reply(conv.conversation_id, now)
                if escalated_at is not None:
                    first_reply_s = now - escalated_at
            return Committed(out, conv.bot_id, reopened=reopen, first_reply_s=first_reply_s)

        done = await write_retrying(self.store, op)
        out = done.outcome
        if "duplicate" not in out.ack:
            self.metrics.messages.labels(done.bot_id, who.role).inc()
            if done.reopened:
                self.metrics.reopenings.labels(done.bot_id).inc()
            if done.first_reply_s is not None:
                self.metrics.time_to_first_reply.labels(done.bot_id).observe(done.first_reply_s)
            out.broadcasts.extend(self.typing.done(data.conversation_id, who))
        return out

    # -- the state machine's moves -------------------------------------------------------------------------
    async def escalate(self, who: Principal, data: p.EscalateIn) -> Outcome:
        """Bot -> waiting: store the transcript turns, then the escalation; tell the bot's agents."""
        require_role(Action.ESCALATE, who.role)

        async def op(tx: Tx) -> Committed:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            target = transition(Status(conv.status), Action.ESCALATE, who.role)
            now, at = self._now()
            count = len(data.transcript) + 1
            seq = await tx.conversations.advance(conv, count, status=target, reason=data.reason, waiting_since=at)
            if seq is None:
                raise Retry
            stored = []
            for i, turn in enumerate(data.transcript):
                sender = Principal(turn.role, conv.customer_id if turn.role == ROLE_CUSTOMER else conv.bot_id)
                stored.append(new_event(conv, seq + i, KIND_MESSAGE, sender, turn.at or at, text=turn.text,
                                        label=turn.label))
            escalated = new_event(conv, seq + count - 1, KIND_ESCALATED, who, at, status=target.value,
                                  reason=data.reason)
            stored.append(escalated)
            await tx.events.insert(stored)
            bot = await tx.bots.get(conv.bot_id)
            plan = self.ladder.merged(bot.ladder if bot else None).plan(now)
            await tx.escalations.insert(conv.conversation_id, escalated["seq"], conv.bot_id, now, plan)
            text = next((t.text for t in reversed(data.transcript) if t.role == ROLE_CUSTOMER), None)
            if text is None:
                text = await tx.events.last_customer_text(conv.conversation_id)
            out = Outcome(ack={"status": target.value, "seq": escalated["seq"]},
                          subscribe=(conv.conversation_id, who.role), ladder_started=bool(plan))
            for event in stored[:-1]:
                out.broadcasts.append(Broadcast(EV_MESSAGE, event, (Subscribed(conv.conversation_id),)))
            out.broadcasts.append(Broadcast(EV_STATUS, status_payload(conv, escalated, reason=data.reason),
                                            everyone(conv.conversation_id, conv.bot_id)))
            notice = EscalationNotice(conv.conversation_id, conv.bot_id, data.reason, preview(text), at,
                                      escalated["seq"], bot_name=bot.name if bot else conv.bot_id)
            return Committed(out, conv.bot_id, notice=notice)

        done = await write_retrying(self.store, op)
        self.metrics.escalations.labels(done.bot_id).inc()
        assert done.notice is not None
        await self.notifier.escalated(done.notice)
        return done.outcome

    async def claim(self, who: Principal, data: p.ConversationRef) -> Outcome:
        """First claim wins (the compare-and-set of ``Conversations.claim``); losers learn who won."""
        require_role(Action.CLAIM, who.role)

        async def op(tx: Tx) -> Committed:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            if conv.status == Status.CLAIMED and conv.agent_id == who.id:
                # Claiming what one already holds (a retry after a lost ack) answers as the won claim did.
                transcript = await tx.events.after(conv.conversation_id, 0)
                return Committed(Outcome(ack={"status": conv.status, "transcript": transcript},
                                         subscribe=(conv.conversation_id, ROLE_AGENT), subscribe_agent=who.id),
                                 conv.bot_id)
            if conv.status == Status.CLAIMED and conv.agent_id:
                name = (await tx.agents.names([conv.agent_id])).get(conv.agent_id, conv.agent_id)
                lost = HandoffError(ERR_ALREADY_CLAIMED, f"claimed by {name}",
                                    claimed_by={"agent_id": conv.agent_id, "name": name})
                return Committed(Outcome(), conv.bot_id, refusal=lost)
            target = transition(Status(conv.status), Action.CLAIM, who.role)  # raises unless waiting
            seq = await tx.conversations.claim(conv, who.id, target)
            if seq is None:
                raise Retry  # another agent won meanwhile: read again, and learn who
            now, at = self._now()
            event = new_event(conv, seq, KIND_CLAIMED, who, at, status=target.value, agent_name=who.name)
            await tx.events.insert([event])
            escalated_at = await tx.escalations.claim(conv.conversation_id, who.id, now)  # stops the ladder
            transcript = await tx.events.after(conv.conversation_id, 0)
            claimed = {"conversation_id": conv.conversation_id, "agent_id": who.id, "agent_name": who.name,
                       "seq": seq}
            out = Outcome(
                ack={"status": target.value, "transcript": transcript, "seq": seq},
                broadcasts=[
                    Broadcast(EV_CLAIMED, claimed, (BotAgents(conv.bot_id), *everyone(conv.conversation_id,
                                                                                     conv.bot_id))),
                    Broadcast(EV_STATUS, status_payload(conv, event, agent_name=who.name),
                              (Subscribed(conv.conversation_id, frozenset({ROLE_CUSTOMER})), TheBot(conv.bot_id))),
                ],
                subscribe=(conv.conversation_id, ROLE_AGENT), subscribe_agent=who.id,
                suggest=SuggestionRequest(conv.conversation_id, conv.bot_id, who.id, seq) if self.suggesting else None,
            )
            return Committed(out, conv.bot_id, claimed=True,
                             waited_s=None if escalated_at is None else now - escalated_at)

        done = await write_retrying(self.store, op)
        if done.refusal is not None:
            if done.refusal.code == ERR_ALREADY_CLAIMED:
                self.metrics.claim_races_lost.labels(done.bot_id).inc()
            raise done.refusal
        if done.claimed:
            self.metrics.claims.labels(done.bot_id).inc()
            if done.waited_s is not None:
                self.metrics.time_to_claim.labels(done.bot_id).observe(done.waited_s)
        return done.outcome

    async def hand_back(self, who: Principal, data: p.HandBackIn) -> Outcome:
        """Agent -> bot: the bot gets every message and tool event since the latest escalation (event and webhook)."""
        require_role(Action.HAND_BACK, who.role)

        async def op(tx: Tx) -> Committed:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            await check_holder(tx, who, conv, Action.HAND_BACK.value)
            target = transition(Status(conv.status), Action.HAND_BACK, who.role)
            seq = await tx.conversations.advance(conv, 1, status=target, release_owner=True)
            if seq is None:
                raise Retry
            now, at = self._now()
            event = new_event(conv, seq, KIND_HANDED_BACK, who, at, status=target.value, note=data.note)
            await tx.events.insert([event])
            await tx.escalations.close(conv.conversation_id)
            since = await tx.events.latest_escalation_seq(conv.conversation_id) or 0
            handed = {"conversation_id": conv.conversation_id, "note": data.note,
                      "turns": await tx.events.turns_after(conv.conversation_id, since), "seq": seq}
            bot = await tx.bots.get(conv.bot_id)
            out = Outcome(ack={"status": target.value, "seq": seq}, subscribe=(conv.conversation_id, ROLE_AGENT))
            if bot is not None and bot.handback_webhook:
                body = {"event": EV_HANDED_BACK, "bot_id": conv.bot_id, **handed}
                await tx.webhooks.enqueue(conv.bot_id, conv.conversation_id, bot.handback_webhook, body, now)
                out.webhook_enqueued = True
            out.broadcasts = [
                Broadcast(EV_STATUS, status_payload(conv, event, note=data.note),
                          everyone(conv.conversation_id, conv.bot_id)),
                Broadcast(EV_HANDED_BACK, handed, (TheBot(conv.bot_id),)),
            ]
            return Committed(out, conv.bot_id)

        done = await write_retrying(self.store, op)
        self.metrics.hand_backs.labels(done.bot_id).inc()
        done.outcome.broadcasts.extend(self.typing.done(data.conversation_id, who))
        return done.outcome

    async def resolve(self, who: Principal, data: p.ConversationRef) -> Outcome:
        """Close the conversation: the holding agent (claimed) or the bot (bot)."""
        require_role(Action.RESOLVE, who.role)

        async def op(tx: Tx) -> Committed:
            conv = await load(tx, data.conversation_id)
            check_party(who, conv)
            if who.role == ROLE_AGENT:
                await check_holder(tx, who, conv, Action.RESOLVE.value)
            target = transition(Status(conv.status), Action.RESOLVE, who.role)
            seq = await tx.conversations.advance(conv, 1, status=target, release_owner=True)
            if seq is None:
                raise Retry
            event = new_event(conv, seq, KIND_RESOLVED, who, self._now()[1], status=target.value)
            await tx.events.insert([event])
            if who.role == ROLE_AGENT:
                await tx.escalations.close(conv.conversation_id)
            return Committed(Outcome(ack={"status": target.value, "seq": seq},
                                     broadcasts=[Broadcast(EV_STATUS, status_payload(conv, event),
                                                           everyone(conv.conversation_id, conv.bot_id))],
                                     subscribe=(conv.conversation_id, who.role)), conv.bot_id)

        done = await write_retrying(self.store, op)
        self.metrics.resolutions.labels(done.bot_id).inc()
        done.outcome.broadcasts.extend(self.typing.done(data.conversation_id, who))
        return done.outcome


def _message_audience(conv: ConversationRow, who: Principal, status: Status) -> tuple[Audience, ...]:
    aud: list[Audience] = [Subscribed(conv.conversation_id), *holder_sockets(conv.agent_id, status.value)]
    # The bot hears customers only while it holds the conversation (PROTOCOL: state ``bot``).
    if who.role == ROLE_BOT or (who.role == ROLE_CUSTOMER and status == Status.BOT):
        aud.append(TheBot(conv.bot_id))
    return tuple(aud)
