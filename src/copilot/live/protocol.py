"""Handoff protocol v1: the names and limits shared by the server, the replay clients and the console.

The whole contract is docs/protocol.md. This module holds only constants, so that the server
(``handoff``) and its clients (``copilot.live.replay``, tests, tools) cannot drift apart on a name.
"""

from __future__ import annotations

from typing import Final

VERSION: Final = 1
NAMESPACE: Final = "/handoff"
API_PREFIX: Final = "/api/v1"
CONSOLE_PATH: Final = "/console/"  # the agent console (browser page served by the server)
WIDGET_PATH: Final = "/widget/"  # the customer chat widget

# Limits.
MAX_TEXT_CHARS: Final = 10_000  # a longer message text is refused with too_large
MAX_NOTE_CHARS: Final = 10_000
MAX_FRAME_BYTES: Final = 2_000_000  # the transport accepts frames of at least 1 MB
PREVIEW_CHARS: Final = 200
MAX_CLIENT_ID_CHARS: Final = 200
MAX_REASON_CHARS: Final = 1_000
MAX_LABEL_CHARS: Final = 200  # a response-template label: 1-200 characters, no whitespace
MAX_TOOL_NAME_CHARS: Final = 100
MAX_TOOL_EVENT_BYTES: Final = 65_536  # a tool event's name, request, result and error as JSON; more is too_large
MIN_EVENTS_PER_SECOND: Final = 20  # every connection may send at least this many events per second

# Identifiers. Bot ids are chatbot ids of the recorded-conversation format (e.g. bank_balance+weather): they
# appear in URLs, MLflow model names and room names, so they keep to a safe alphabet. Agent and conversation ids
# follow the same rule (conversation ids may also hold ':', as in imported "source:id" ids).
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$"
CONVERSATION_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,199}$"
LABEL_PATTERN: Final = r"^\S{1,200}$"

# Roles.
ROLE_CUSTOMER: Final = "customer"
ROLE_BOT: Final = "bot"
ROLE_AGENT: Final = "agent"
ROLE_ADMIN: Final = "admin"

# Conversation states.
STATUS_BOT: Final = "bot"
STATUS_WAITING: Final = "waiting"
STATUS_CLAIMED: Final = "claimed"
STATUS_RESOLVED: Final = "resolved"
STATUSES: Final = (STATUS_BOT, STATUS_WAITING, STATUS_CLAIMED, STATUS_RESOLVED)

# Stored event kinds.
KIND_MESSAGE: Final = "message"
KIND_ESCALATED: Final = "escalated"
KIND_CLAIMED: Final = "claimed"
KIND_HANDED_BACK: Final = "handed_back"
KIND_RESOLVED: Final = "resolved"
KIND_REOPENED: Final = "reopened"
KIND_TOOL: Final = "tool"  # a lookup the bot or the agent made, and what it returned: never shown to a customer
EVENT_KINDS: Final = (KIND_MESSAGE, KIND_ESCALATED, KIND_CLAIMED, KIND_HANDED_BACK, KIND_RESOLVED, KIND_REOPENED,
                      KIND_TOOL)

# Client -> server events.
EV_JOIN: Final = "join"
EV_MESSAGE: Final = "message"
EV_TYPING: Final = "typing"
EV_ESCALATE: Final = "escalate"
EV_CLAIM: Final = "claim"
EV_HAND_BACK: Final = "hand_back"
EV_RESOLVE: Final = "resolve"
EV_SUGGESTION_FEEDBACK: Final = "suggestion_feedback"
EV_RESUME: Final = "resume"
EV_TOOL_EVENT: Final = "tool_event"  # client -> server (post one) and server -> agents and bot (the stored event)
CLIENT_EVENTS: Final = (
    EV_JOIN,
    EV_MESSAGE,
    EV_TYPING,
    EV_ESCALATE,
    EV_CLAIM,
    EV_HAND_BACK,
    EV_RESOLVE,
    EV_SUGGESTION_FEEDBACK,
    EV_RESUME,
    EV_TOOL_EVENT,
)

# Server -> client events.
EV_ESCALATION: Final = "escalation"
EV_CLAIMED: Final = "claimed"
EV_STATUS: Final = "status"
EV_SUGGESTIONS: Final = "suggestions"
EV_HANDED_BACK: Final = "handed_back"
# "message" and "typing" are sent in both directions (EV_MESSAGE, EV_TYPING).

# Typing states and suggestion feedback actions.
TYPING_START: Final = "start"
TYPING_STOP: Final = "stop"
FEEDBACK_SENT: Final = "sent"
FEEDBACK_EDITED: Final = "edited"
FEEDBACK_IGNORED: Final = "ignored"
FEEDBACK_ACTIONS: Final = (FEEDBACK_SENT, FEEDBACK_EDITED, FEEDBACK_IGNORED)

# A ``status`` event that is a notice, not a stored change (no seq): the expected wait of an unclaimed escalation.
NOTICE_EXPECTED_WAIT: Final = "expected_wait"
# The fallback webhook's ``event`` when an escalation stayed unclaimed (the hand-back webhook's is "handed_back").
WEBHOOK_UNCLAIMED: Final = "unclaimed"
VAPID_PUBLIC_KEY_PATH: Final = "/push/vapid-public-key"  # under API_PREFIX

# Device kinds for push notifications (POST /agents/me/devices).
DEVICE_WEBPUSH: Final = "webpush"
DEVICE_FCM: Final = "fcm"
DEVICE_APNS: Final = "apns"
DEVICE_KINDS: Final = (DEVICE_WEBPUSH, DEVICE_FCM, DEVICE_APNS)

# Error codes (acks and HTTP bodies).
ERR_INVALID_PAYLOAD: Final = "invalid_payload"
ERR_UNAUTHORIZED: Final = "unauthorized"
ERR_FORBIDDEN: Final = "forbidden"
ERR_NOT_FOUND: Final = "not_found"
ERR_INVALID_TRANSITION: Final = "invalid_transition"
ERR_ALREADY_CLAIMED: Final = "already_claimed"
ERR_TOO_LARGE: Final = "too_large"
ERR_RATE_LIMITED: Final = "rate_limited"
ERR_CONFLICT: Final = "conflict"  # HTTP 409: an id that exists already
ERR_INTERNAL: Final = "internal_error"  # addition: the server failed; the event may be retried (HTTP 500)
ERROR_CODES: Final = (
    ERR_INVALID_PAYLOAD,
    ERR_UNAUTHORIZED,
    ERR_FORBIDDEN,
    ERR_NOT_FOUND,
    ERR_INVALID_TRANSITION,
    ERR_ALREADY_CLAIMED,
    ERR_TOO_LARGE,
    ERR_RATE_LIMITED,
    ERR_CONFLICT,
    ERR_INTERNAL,
)
HTTP_STATUS: Final = {
    ERR_INVALID_PAYLOAD: 400,
    ERR_UNAUTHORIZED: 401,
    ERR_FORBIDDEN: 403,
    ERR_NOT_FOUND: 404,
    ERR_INVALID_TRANSITION: 409,
    ERR_ALREADY_CLAIMED: 409,
    ERR_CONFLICT: 409,
    ERR_TOO_LARGE: 413,
    ERR_RATE_LIMITED: 429,
    ERR_INTERNAL: 500,
}
