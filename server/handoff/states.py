"""The conversation state machine: statuses, actions, and the one table of legal moves.

Every change of status in the server goes through :func:`transition`; anything not in :data:`TRANSITIONS`
raises :class:`InvalidTransition` (code ``invalid_transition``) and nothing changes. Who may write a message in
which status is the second table, :data:`WRITERS`.
"""

from __future__ import annotations

from enum import StrEnum

from copilot.live.protocol import (
    ERR_FORBIDDEN,
    ERR_INVALID_TRANSITION,
    ROLE_AGENT,
    ROLE_BOT,
    ROLE_CUSTOMER,
    STATUS_BOT,
    STATUS_CLAIMED,
    STATUS_RESOLVED,
    STATUS_WAITING,
)
from handoff.errors import HandoffError


class Status(StrEnum):
    BOT = STATUS_BOT
    WAITING = STATUS_WAITING
    CLAIMED = STATUS_CLAIMED
    RESOLVED = STATUS_RESOLVED


class Action(StrEnum):
    ESCALATE = "escalate"
    CLAIM = "claim"
    HAND_BACK = "hand_back"
    RESOLVE = "resolve"
    REOPEN = "reopen"


# (from, action) -> (to, roles allowed to take that move). The only place where moves are decided.
TRANSITIONS: dict[tuple[Status, Action], tuple[Status, frozenset[str]]] = {
    (Status.BOT, Action.ESCALATE): (Status.WAITING, frozenset({ROLE_BOT})),
    (Status.WAITING, Action.CLAIM): (Status.CLAIMED, frozenset({ROLE_AGENT})),
    (Status.CLAIMED, Action.HAND_BACK): (Status.BOT, frozenset({ROLE_AGENT})),
    (Status.CLAIMED, Action.RESOLVE): (Status.RESOLVED, frozenset({ROLE_AGENT})),
    (Status.BOT, Action.RESOLVE): (Status.RESOLVED, frozenset({ROLE_BOT})),
    # A customer writing to a resolved conversation reopens it with the bot (event ``reopened``).
    (Status.RESOLVED, Action.REOPEN): (Status.BOT, frozenset({ROLE_CUSTOMER})),
}

# Who may write a message in which status. The customer writing in ``resolved`` first reopens the conversation;
# an agent may write only to a conversation it holds (checked by handoff.rules.check_holder, which knows the holder).
WRITERS: dict[str, frozenset[Status]] = {
    ROLE_CUSTOMER: frozenset({Status.BOT, Status.WAITING, Status.CLAIMED, Status.RESOLVED}),
    ROLE_BOT: frozenset({Status.BOT, Status.WAITING}),
    ROLE_AGENT: frozenset({Status.CLAIMED}),
}

ROLES_BY_ACTION: dict[Action, frozenset[str]] = {}
for (_, _action), (_, _roles) in TRANSITIONS.items():
    ROLES_BY_ACTION[_action] = ROLES_BY_ACTION.get(_action, frozenset()) | _roles


class InvalidTransition(HandoffError):
    """A move the state machine does not allow from the conversation's current status."""

    def __init__(self, current: Status, action: Action | str, detail: str = "") -> None:
        message = f"cannot {action} a conversation in status {current.value!r}"
        super().__init__(ERR_INVALID_TRANSITION, message + (f": {detail}" if detail else ""),
                         status=current.value)


_PHRASES = {Action.ESCALATE: "escalate", Action.CLAIM: "claim", Action.HAND_BACK: "hand back",
            Action.RESOLVE: "resolve", Action.REOPEN: "reopen"}


def require_role(action: Action, role: str) -> None:
    """Raise ``forbidden`` unless ``role`` takes ``action`` in some status (from :data:`TRANSITIONS`)."""
    if role not in ROLES_BY_ACTION.get(action, frozenset()):
        raise HandoffError(ERR_FORBIDDEN, f"a {role} cannot {_PHRASES[action]} a conversation")


def transition(current: Status, action: Action, role: str) -> Status:
    """The status after ``role`` takes ``action`` in ``current``.

    Raises:
        HandoffError: ``forbidden`` when the role may never take this action (:func:`require_role`);
        InvalidTransition: when the action is not legal from ``current``.
    """
    require_role(action, role)
    move = TRANSITIONS.get((current, action))
    if move is None:
        raise InvalidTransition(current, action)
    target, roles = move
    if role not in roles:
        raise InvalidTransition(current, action, f"only a {' or '.join(sorted(roles))} can do that now")
    return target


def may_write(role: str, current: Status) -> None:
    """Raise unless ``role`` may write a message in ``current`` (the agent's holding is checked elsewhere)."""
    if role not in WRITERS:
        raise HandoffError(ERR_FORBIDDEN, f"a {role} cannot send messages")
    if current not in WRITERS[role]:
        raise InvalidTransition(current, "write to", f"a {role} may write only in "
                                + ", ".join(sorted(s.value for s in WRITERS[role])))
