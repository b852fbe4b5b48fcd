"""What an accepted operation produces: the acknowledgement and the broadcasts, addressed to abstract audiences.

The services return an :class:`Outcome`; ``handoff.delivery`` maps each audience to Socket.IO rooms, sends the
broadcasts once the change is stored, subscribes sockets and starts the background work the outcome asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from copilot.live.protocol import ROLE_AGENT, ROLE_CUSTOMER, STATUS_CLAIMED


# Audiences: who receives a broadcast (mapped to rooms by handoff.delivery).
@dataclass(frozen=True)
class Subscribed:
    """Sockets subscribed to the conversation (by join, claim, resume or an accepted event), of these roles."""

    conversation_id: str
    roles: frozenset[str] = frozenset({ROLE_CUSTOMER, ROLE_AGENT})


@dataclass(frozen=True)
class TheBot:
    """Every connected socket of the bot."""

    bot_id: str


@dataclass(frozen=True)
class AgentSockets:
    """Every connected socket of one agent (phone and browser alike)."""

    agent_id: str


@dataclass(frozen=True)
class BotAgents:
    """Every connected agent registered for the bot."""

    bot_id: str


Audience = Subscribed | TheBot | AgentSockets | BotAgents


@dataclass(frozen=True)
class Broadcast:
    """One server->client event. ``skip_sender``: never to the socket whose event caused it."""

    event: str
    payload: dict[str, Any]
    to: tuple[Audience, ...]
    skip_sender: bool = True


@dataclass(frozen=True)
class SuggestionRequest:
    """Ask the provider for the claiming agent's next reply, as of ``for_seq``."""

    conversation_id: str
    bot_id: str
    agent_id: str
    for_seq: int


@dataclass
class Outcome:
    """What an accepted operation produced.

    Attributes:
        ack: the acknowledgement's fields (the transport adds ``ok: true``).
        broadcasts: events to send, in order, once the change is stored.
        subscribe: (conversation_id, role) the caller's socket subscribes to.
        subscribe_agent: an agent all of whose sockets subscribe to ``subscribe``'s conversation (a won claim).
        suggest: suggestions to compute in the background afterwards.
        webhook_enqueued: a webhook waits in the outbox (wake the deliverer).
        ladder_started: an unclaimed-escalation ladder was scheduled (wake the ladder's loop).
    """

    ack: dict[str, Any] = field(default_factory=dict)
    broadcasts: list[Broadcast] = field(default_factory=list)
    subscribe: tuple[str, str] | None = None
    subscribe_agent: str | None = None
    suggest: SuggestionRequest | None = None
    webhook_enqueued: bool = False
    ladder_started: bool = False


def holder_sockets(agent_id: str | None, status: str) -> tuple[Audience, ...]:
    """Every socket of the agent holding a claimed conversation, on every process: a device that did not claim (or
    is connected to another server process) is in no conversation room there, but is in its agent's room."""
    return (AgentSockets(agent_id),) if status == STATUS_CLAIMED and agent_id else ()


def everyone(conversation_id: str, bot_id: str) -> tuple[Audience, ...]:
    """The conversation's parties: its subscribed sockets and the bot."""
    return (Subscribed(conversation_id), TheBot(bot_id))
