"""Validation of every client payload (Socket.IO events and HTTP bodies) into typed values.

A payload that is not an object, lacks a field, has a field of the wrong type, or carries a field the protocol
does not define is refused with ``invalid_payload`` naming the field; an over-long text with ``too_large``.
Nothing is read from a payload anywhere else in the server.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from copilot.live.protocol import (
    CONVERSATION_ID_PATTERN,
    DEVICE_KINDS,
    ERR_INVALID_PAYLOAD,
    ERR_TOO_LARGE,
    FEEDBACK_ACTIONS,
    ID_PATTERN,
    LABEL_PATTERN,
    MAX_CLIENT_ID_CHARS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOOL_EVENT_BYTES,
    MAX_TOOL_NAME_CHARS,
    ROLE_BOT,
    ROLE_CUSTOMER,
    STATUSES,
    TYPING_START,
    TYPING_STOP,
)
from handoff.errors import HandoffError
from handoff.settings import MAX_LADDER_S

_ID = re.compile(ID_PATTERN)
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")
MAX_NAME_CHARS = 200
MAX_CUSTOMER_JSON_KEYS = 50
MAX_TRANSCRIPT_TURNS = 1000
MAX_SUBSCRIPTION_CHARS = 8000
MAX_SAFE_INTEGER = 2**53  # a JSON number every client reads exactly


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be stored and sent as UTF-8 (JSON's ``\ud800`` escapes decode to lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def invalid(message: str) -> HandoffError:
    return HandoffError(ERR_INVALID_PAYLOAD, message)


class Fields:
    """Reads the fields of one payload object; :meth:`done` refuses any field that was not read."""

    def __init__(self, payload: object, what: str) -> None:
        if not isinstance(payload, Mapping):
            raise invalid(f"{what}: the payload must be a JSON object, not {type(payload).__name__}")
        self.payload = payload
        self.what = what
        self.seen: set[str] = set()

    def _get(self, name: str, required: bool) -> Any:
        self.seen.add(name)
        value = self.payload.get(name)
        if value is None and required:
            raise invalid(f"{self.what}: '{name}' is required")
        return value

    def text(self, name: str, *, required: bool = True, max_chars: int = MAX_NAME_CHARS,
             pattern: re.Pattern[str] | None = None, too_large: bool = False, blank: bool = False) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(f"{self.what}: '{name}' must be a string, not {type(value).__name__}")
        if len(value) > max_chars:
            code = ERR_TOO_LARGE if too_large else ERR_INVALID_PAYLOAD
            raise HandoffError(code, f"{self.what}: '{name}' holds {len(value)} characters; "
                                     f"at most {max_chars} are allowed", limit=max_chars)
        if not blank and not value.strip():
            raise invalid(f"{self.what}: '{name}' must not be empty")
        if not is_unicode(value):
            raise invalid(f"{self.what}: '{name}' is not valid Unicode (it holds a lone surrogate)")
        if pattern is not None and not pattern.match(value):
            raise invalid(f"{self.what}: '{name}' {value[:80]!r} does not match {pattern.pattern}")
        return value

    def req_text(self, name: str, **kw: Any) -> str:
        value = self.text(name, required=True, **kw)
        assert value is not None
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, required: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if value not in choices:
            raise invalid(f"{self.what}: '{name}' must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    def integer(self, name: str, *, minimum: int = 0, required: bool = True) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"{self.what}: '{name}' must be an integer, not {value!r}")
        if not minimum <= value <= MAX_SAFE_INTEGER:
            raise invalid(f"{self.what}: '{name}' must be between {minimum} and 2^53, not {value}")
        return value

    def raw(self, name: str, *, required: bool = True) -> Any:
        return self._get(name, required)

    def done(self) -> None:
        extra = sorted(str(k) for k in self.payload if k not in self.seen)
        if extra:
            raise invalid(f"{self.what}: unknown field(s) {', '.join(extra)} (see docs/protocol.md)")


def _conversation_id(f: Fields) -> str:
    return f.req_text("conversation_id", pattern=_CONVERSATION_ID)


@dataclass(frozen=True)
class ConversationRef:
    conversation_id: str


@dataclass(frozen=True)
class MessageIn:
    conversation_id: str
    client_id: str
    text: str
    label: str | None


@dataclass(frozen=True)
class TypingIn:
    conversation_id: str
    state: str


@dataclass(frozen=True)
class TurnIn:
    role: str
    text: str
    at: str | None
    label: str | None


@dataclass(frozen=True)
class EscalateIn:
    conversation_id: str
    reason: str | None
    transcript: tuple[TurnIn, ...]


@dataclass(frozen=True)
class HandBackIn:
    conversation_id: str
    note: str | None


@dataclass(frozen=True)
class FeedbackIn:
    conversation_id: str
    suggestion_id: str
    action: str


@dataclass(frozen=True)
class ResumeIn:
    conversation_id: str
    after_seq: int


@dataclass(frozen=True)
class BotIn:
    bot_id: str
    name: str
    handback_webhook: str | None
    ladder: dict[str, Any] | None = None


@dataclass(frozen=True)
class AgentIn:
    agent_id: str
    name: str
    bots: tuple[str, ...]


@dataclass(frozen=True)
class DeviceIn:
    kind: str
    subscription: Any


@dataclass(frozen=True)
class ConversationIn:
    conversation_id: str | None
    customer: dict[str, Any] | None


def conversation_ref(payload: object, what: str) -> ConversationRef:
    f = Fields(payload, what)
    ref = ConversationRef(_conversation_id(f))
    f.done()
    return ref


def message(payload: object) -> MessageIn:
    f = Fields(payload, "message")
    out = MessageIn(
        conversation_id=_conversation_id(f),
        client_id=f.req_text("client_id", max_chars=MAX_CLIENT_ID_CHARS),
        text=f.req_text("text", max_chars=MAX_TEXT_CHARS, too_large=True),
        label=f.text("label", required=False, max_chars=200, pattern=_LABEL),
    )
    f.done()
    return out


@dataclass(frozen=True)
class ToolEventIn:
    """A lookup the bot or the agent made (a knowledge-base query, an order or CRM lookup) and what it returned."""

    conversation_id: str
    client_id: str | None
    name: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None


def tool_event(payload: object, *, conversation_id: str | None = None) -> ToolEventIn:
    """A ``tool_event`` (Socket.IO: with ``conversation_id`` and ``client_id``) or the body of
    ``POST /conversations/{id}/tool-events`` (``conversation_id`` from the path, ``client_id`` optional)."""
    f = Fields(payload, "tool_event")
    cid = conversation_id if conversation_id is not None else _conversation_id(f)
    client_id = f.text("client_id", required=conversation_id is None, max_chars=MAX_CLIENT_ID_CHARS)
    name = f.req_text("name", max_chars=MAX_TOOL_NAME_CHARS)
    request = f.raw("request")
    result = f.raw("result", required=False)
    for field, value in (("request", request), ("result", result)):
        if value is not None and not isinstance(value, dict):
            raise invalid(f"tool_event: '{field}' must be a JSON object, not {type(value).__name__}")
    error = f.text("error", required=False, max_chars=MAX_TOOL_EVENT_BYTES, too_large=True)
    f.done()
    try:
        size = len(json.dumps({"name": name, "request": request, "result": result, "error": error},
                              ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except ValueError as exc:  # NaN or infinity
        raise invalid(f"tool_event: not valid JSON ({exc})") from None
    except UnicodeEncodeError:
        raise invalid("tool_event: holds text that is not valid Unicode (a lone surrogate)") from None
    if size > MAX_TOOL_EVENT_BYTES:
        raise HandoffError(ERR_TOO_LARGE, f"tool_event: {size} bytes of JSON; at most {MAX_TOOL_EVENT_BYTES} are "
                                          "allowed", limit=MAX_TOOL_EVENT_BYTES)
    return ToolEventIn(cid, client_id, name, request, result, error)


def typing(payload: object) -> TypingIn:
    f = Fields(payload, "typing")
    out = TypingIn(_conversation_id(f), str(f.choice("state", (TYPING_START, TYPING_STOP))))
    f.done()
    return out


def _turn(value: object, index: int) -> TurnIn:
    f = Fields(value, f"transcript[{index}]")
    role = str(f.choice("role", (ROLE_CUSTOMER, ROLE_BOT)))
    text = f.req_text("text", max_chars=MAX_TEXT_CHARS, too_large=True)
    at = f.text("at", required=False, max_chars=40)
    if at is not None and not _ISO_TIME.match(at):
        raise invalid(f"transcript[{index}]: 'at' must be an ISO 8601 time, not {at!r}")
    label = f.text("label", required=False, max_chars=200, pattern=_LABEL)
    if label is not None and role == ROLE_CUSTOMER:
        raise invalid(f"transcript[{index}]: a customer turn carries no 'label'")
    f.done()
    return TurnIn(role, text, at, label)


def escalate(payload: object, conversation_id: str | None = None) -> EscalateIn:
    """The escalate event (``conversation_id`` in the payload) or HTTP body (``conversation_id`` from the URL)."""
    f = Fields({} if payload is None and conversation_id is not None else payload, "escalate")
    cid = conversation_id if conversation_id is not None else _conversation_id(f)
    reason = f.text("reason", required=False, max_chars=MAX_REASON_CHARS, too_large=True, blank=True)
    raw = f.raw("transcript", required=False)
    if raw is None:
        turns: tuple[TurnIn, ...] = ()
    elif not isinstance(raw, list):
        raise invalid("escalate: 'transcript' must be a list of turns {role, text, at?}")
    elif len(raw) > MAX_TRANSCRIPT_TURNS:
        raise HandoffError(ERR_TOO_LARGE, f"escalate: at most {MAX_TRANSCRIPT_TURNS} transcript turns")
    else:
        turns = tuple(_turn(t, i) for i, t in enumerate(raw))
    f.done()
    return EscalateIn(cid, reason, turns)


def hand_back(payload: object) -> HandBackIn:
    f = Fields(payload, "hand_back")
    out = HandBackIn(_conversation_id(f), f.text("note", required=False, max_chars=MAX_NOTE_CHARS, too_large=True,
                                                 blank=True))
    f.done()
    return out


def feedback(payload: object) -> FeedbackIn:
    f = Fields(payload, "suggestion_feedback")
    out = FeedbackIn(_conversation_id(f), f.req_text("suggestion_id", max_chars=64),
                     str(f.choice("action", FEEDBACK_ACTIONS)))
    f.done()
    return out


def resume(payload: object) -> ResumeIn:
    f = Fields(payload, "resume")
    out = ResumeIn(_conversation_id(f), int(f.integer("after_seq") or 0))
    f.done()
    return out


def _webhook(url: str | None, name: str = "handback_webhook") -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f"'{name}' must be an http(s) URL, not {url[:80]!r}")
    return url


def ladder(payload: object, what: str = "ladder") -> dict[str, Any]:
    """A bot's own unclaimed-escalation ladder: ``{renotify_after_s?, wait_notice_after_s?, fallback_after_s?,
    fallback_webhook?}``. A key left out takes the server's default; ``null`` turns that rung off."""
    if not isinstance(payload, Mapping):
        raise invalid(f"{what}: must be an object with renotify_after_s, wait_notice_after_s, fallback_after_s, "
                      f"fallback_webhook")
    out: dict[str, Any] = {}
    for key in ("renotify_after_s", "wait_notice_after_s", "fallback_after_s"):
        if key not in payload:
            continue
        value = payload[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= MAX_LADDER_S):
            raise invalid(f"{what}: '{key}' must be seconds between 0 and {MAX_LADDER_S:.0f}, or null, not {value!r}")
        out[key] = None if value is None else float(value)
    if "fallback_webhook" in payload:
        url = payload["fallback_webhook"]
        if url is not None and (not isinstance(url, str) or len(url) > 2000):
            raise invalid(f"{what}: 'fallback_webhook' must be an http(s) URL or null")
        out["fallback_webhook"] = _webhook(url, "fallback_webhook")
    extra = sorted(str(k) for k in payload if k not in out)
    if extra:
        raise invalid(f"{what}: unknown field(s) {', '.join(extra)} (see docs/protocol.md)")
    return out


def bot(payload: object) -> BotIn:
    f = Fields(payload, "bot")
    out = BotIn(f.req_text("bot_id", pattern=_ID), f.req_text("name"),
                _webhook(f.text("handback_webhook", required=False, max_chars=2000)))
    raw_ladder = f.raw("ladder", required=False)
    f.done()
    if raw_ladder is not None:
        out = BotIn(out.bot_id, out.name, out.handback_webhook, ladder(raw_ladder, "bot.ladder"))
    return out


def agent(payload: object) -> AgentIn:
    f = Fields(payload, "agent")
    agent_id = f.req_text("agent_id", pattern=_ID)
    name = f.req_text("name")
    raw = f.raw("bots")
    if not isinstance(raw, list) or not all(isinstance(b, str) and _ID.match(b) for b in raw):
        raise invalid("agent: 'bots' must be a list of bot ids")
    f.done()
    return AgentIn(agent_id, name, tuple(dict.fromkeys(raw)))


def _push_key(value: str, name: str, size: int) -> None:
    """A Web Push key as the Push API gives it (base64url): p256dh a P-256 point, auth 16 bytes."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if len(raw) != size:
            raise ValueError(f"{len(raw)} bytes instead of {size}")
        if name == "p256dh":
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except (ValueError, binascii.Error) as exc:
        raise invalid(f"device.subscription.keys: '{name}' is not a base64url {name} key ({exc})") from None


def device(payload: object) -> DeviceIn:
    f = Fields(payload, "device")
    kind = str(f.choice("kind", DEVICE_KINDS))
    subscription = f.raw("subscription")
    f.done()
    if kind == "webpush":
        sub = Fields(subscription, "device.subscription")
        endpoint = sub.req_text("endpoint", max_chars=2000)
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise invalid("device.subscription: 'endpoint' must be an http(s) URL")
        keys = Fields(sub.raw("keys"), "device.subscription.keys")
        _push_key(keys.req_text("p256dh", max_chars=200), "p256dh", 65)
        _push_key(keys.req_text("auth", max_chars=200), "auth", 16)
        keys.done()
        sub.raw("expirationTime", required=False)
        sub.done()
    elif not isinstance(subscription, str) or not subscription.strip() or len(subscription) > 4096:
        raise invalid(f"device: an {kind} 'subscription' is the device token, a non-empty string")
    return DeviceIn(kind, subscription)


def new_conversation(payload: object) -> ConversationIn:
    f = Fields({} if payload is None else payload, "conversation")
    cid = f.text("conversation_id", required=False, pattern=_CONVERSATION_ID)
    customer = f.raw("customer", required=False)
    f.done()
    if customer is not None:
        if not isinstance(customer, dict) or len(customer) > MAX_CUSTOMER_JSON_KEYS:
            raise invalid(f"conversation: 'customer' must be an object with at most {MAX_CUSTOMER_JSON_KEYS} keys")
        cust_id = customer.get("id")
        if cust_id is not None and not (isinstance(cust_id, str) and _CONVERSATION_ID.match(cust_id)):
            raise invalid("conversation: 'customer.id' must be a string id")
    return ConversationIn(cid, customer)


def status_filter(value: str | None) -> str:
    if value is None:
        return "waiting"
    if value not in STATUSES:
        raise invalid(f"'status' must be one of {', '.join(STATUSES)}, not {value!r}")
    return value


def after_seq(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 16 or int(value) > MAX_SAFE_INTEGER:
        raise invalid(f"'after_seq' must be an integer between 0 and 2^53, not {value[:40]!r}")
    return int(value)


def path_id(value: str, what: str, *, conversation: bool = False) -> str:
    pattern = _CONVERSATION_ID if conversation else _ID
    if not pattern.match(value):
        raise invalid(f"{what} {value[:80]!r} does not match {pattern.pattern}")
    return value
