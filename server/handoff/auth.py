"""Credentials: issuing tokens, storing only their hashes, and turning a presented token into a Principal.

Tokens are 256 random bits (``secrets.token_urlsafe(32)``), so one SHA-256 is enough to store them safely (a slow
password hash protects guessable secrets; these are not guessable). The admin key lives in the settings and is
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from copilot.live.protocol import ERR_UNAUTHORIZED, ROLE_ADMIN, ROLE_AGENT, ROLE_BOT, ROLE_CUSTOMER
from handoff.errors import HandoffError
from handoff.store import Store


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        role: bot, agent, customer or admin.
        id: the bot id, the agent id, or the customer's id (``sender`` in events).
        name: display name (agents and bots).
        bots: the bots this principal acts for: a bot its own id, an agent the bots it is registered for,
            a customer the bot of its conversation.
        conversation_id: the one conversation of a customer.
    """

    role: str
    id: str
    name: str = ""
    bots: frozenset[str] = frozenset()
    conversation_id: str | None = None


ADMIN = Principal(ROLE_ADMIN, "admin", "admin")


def new_token() -> str:
    """A fresh credential: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_admin_key(token: str, admin_key: str | None) -> bool:
    return admin_key is not None and hmac.compare_digest(token.encode("utf-8"), admin_key.encode("utf-8"))


async def principal_for(store: Store, token: object) -> Principal:
    """The principal a bot, agent or customer token stands for.

    Raises:
        HandoffError: ``unauthorized`` for a missing, malformed or unknown token.
    """
    if not isinstance(token, str) or not token or len(token) > 512:
        raise HandoffError(ERR_UNAUTHORIZED, "a token is required (Socket.IO auth={'token': ...} or "
                                             "'Authorization: Bearer <token>')")
    async with store.read() as tx:
        cred = await tx.credentials.get(hash_token(token))
        if cred is None:
            raise HandoffError(ERR_UNAUTHORIZED, "unknown token")
        if cred.role == ROLE_BOT:
            bot = await tx.bots.get(cred.subject_id)
            if bot is not None:
                return Principal(ROLE_BOT, bot.bot_id, bot.name, frozenset({bot.bot_id}))
        elif cred.role == ROLE_AGENT:
            agent = await tx.agents.get(cred.subject_id)
            if agent is not None:
                return Principal(ROLE_AGENT, agent.agent_id, agent.name, agent.bots)
        elif cred.role == ROLE_CUSTOMER:
            conv = await tx.conversations.get(cred.subject_id)
            if conv is not None:
                return Principal(ROLE_CUSTOMER, conv.customer_id, "customer", frozenset({conv.bot_id}),
                                 conv.conversation_id)
    raise HandoffError(ERR_UNAUTHORIZED, "the token's owner no longer exists")
