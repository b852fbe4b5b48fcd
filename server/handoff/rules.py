"""The checks and building blocks every conversation operation shares: finding the conversation, who may act on
it, the events it stores, and running a transaction again when a compare-and-set lost to a concurrent writer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from copilot.live.protocol import (
    ERR_FORBIDDEN,
    ERR_INTERNAL,
    ERR_NOT_FOUND,
    PREVIEW_CHARS,
    ROLE_AGENT,
    ROLE_BOT,
    ROLE_CUSTOMER,
)
from handoff.auth import Principal
from handoff.errors import HandoffError
from handoff.states import InvalidTransition, Status
from handoff.store import ConversationRow, IntegrityError, Store, Tx

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_ATTEMPTS = 8


class Retry(Exception):
    """The conversation changed between reading and writing; read again and decide again."""


async def write_retrying(store: Store, op: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
    """Run ``op`` in a transaction, again from the start when a compare-and-set lost to a concurrent writer.

    ``op`` raises :class:`Retry` when its compare-and-set matched nothing; a unique-key race (two resends of one
    ``client_id``) is retried too, and the loser then finds the winner's event.
    """
    for attempt in range(_MAX_ATTEMPTS):
        try:
            return await store.write(op)
        except Retry:
            log.debug("write retried after a concurrent change (attempt %d)", attempt + 1)
        except IntegrityError:
            log.debug("write retried after a unique-key race (attempt %d)", attempt + 1)
    raise HandoffError(ERR_INTERNAL, "the conversation kept changing; please retry")


async def load(tx: Tx, conversation_id: str) -> ConversationRow:
    """The conversation, or ``not_found``."""
    conv = await tx.conversations.get(conversation_id)
    if conv is None:
        raise HandoffError(ERR_NOT_FOUND, f"no conversation {conversation_id!r}")
    return conv


def check_party(who: Principal, conv: ConversationRow) -> None:
    """Raise ``forbidden`` unless ``who`` is one of the conversation's parties."""
    if who.role == ROLE_CUSTOMER:
        ok = who.conversation_id == conv.conversation_id
    elif who.role in (ROLE_BOT, ROLE_AGENT):
        ok = conv.bot_id in who.bots
    else:
        ok = False
    if not ok:
        what = "its own conversation" if who.role == ROLE_CUSTOMER else "conversations of its bots"
        raise HandoffError(ERR_FORBIDDEN, f"a {who.role} may act only on {what}")


async def check_holder(tx: Tx, who: Principal, conv: ConversationRow, action: str) -> None:
    """An agent acts on a conversation it holds; else invalid_transition if it held it before, else forbidden."""
    if conv.status == Status.CLAIMED and conv.agent_id == who.id:
        return
    if await tx.events.held_before(conv.conversation_id, who.id):
        raise InvalidTransition(Status(conv.status), action, "you no longer hold this conversation")
    raise HandoffError(ERR_FORBIDDEN, f"only the agent holding the conversation can {action} it")


def new_event(conv: ConversationRow, seq: int, kind: str, who: Principal | None, at: str,
              **fields: Any) -> dict[str, Any]:
    """An event to store: the conversation, seq and kind, who caused it, when, and the fields that are set."""
    event: dict[str, Any] = {"conversation_id": conv.conversation_id, "seq": seq, "kind": kind}
    if who is not None:
        event["role"] = who.role
        event["sender"] = who.id
    event.update({k: v for k, v in fields.items() if v is not None})
    event["at"] = at
    return event


def status_payload(conv: ConversationRow, event: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``status`` broadcast announcing a stored state event."""
    out = {"conversation_id": conv.conversation_id, "status": event["status"], "seq": event["seq"],
           "kind": event["kind"]}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def preview(text: str | None) -> str | None:
    """The start of a customer's message, as queue items and notifications show it."""
    return text[:PREVIEW_CHARS] if text is not None else None
