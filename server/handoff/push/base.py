"""What every push adapter shares: the message, one attempt's result, and the sender interface."""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from handoff.push.jws import b64url
from handoff.store import DeviceRow

DELIVERED = "delivered"  # the push service accepted it
EXPIRED = "expired"  # the subscription or token is gone for good (404/410): the device is removed
RETRY = "retry"  # 429, 5xx, no answer: worth another attempt later
REJECTED = "rejected"  # any other refusal (bad request, bad credentials): retrying would not help


@dataclass(frozen=True)
class PushMessage:
    """One notification, the same for every device and kind.

    Attributes:
        title, body: what the notification shows.
        data: the conversation it is about, for the app to open (strings only: FCM data must be strings).
        ttl_s: how long the push service may keep it for an offline device.
        urgency: Web Push urgency (``high`` wakes a sleeping phone; FCM and APNs priority follow it).
        collapse_key: one per conversation, so a reminder replaces an earlier undelivered notification.
    """

    title: str
    body: str
    data: dict[str, str]
    ttl_s: int
    urgency: str
    collapse_key: str = field(default="")

    def short_topic(self) -> str:
        """The collapse key as 32 base64url characters (Web Push ``Topic``, RFC 8030 section 5.4)."""
        return b64url(hashlib.sha256(self.collapse_key.encode("utf-8")).digest())[:32]

    def web_payload(self) -> dict[str, Any]:
        """The JSON a service worker receives: ``showNotification(title, {body, tag, data})``."""
        return {"title": self.title, "body": self.body, "tag": f"handoff:{self.data.get('conversation_id', '')}",
                "data": self.data}

    def web_payload_bytes(self) -> bytes:
        """:meth:`web_payload` as compact UTF-8 JSON (not ASCII-escaped: a ``\\uXXXX`` costs 6 bytes)."""
        return json.dumps(self.web_payload(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Attempt:
    """The result of one request to a push service."""

    outcome: str  # DELIVERED, EXPIRED, RETRY or REJECTED
    status: int | None = None  # the HTTP status, when there was an answer
    error: str | None = None
    retry_after_s: float | None = None  # the service's Retry-After, when it sent one


class PushSender(Protocol):
    """One kind of push service (``webpush``, ``fcm``, ``apns``) behind one interface."""

    kind: str

    async def send(self, device: DeviceRow, message: PushMessage) -> Attempt:
        """One attempt to push ``message`` to ``device``; network trouble is an Attempt, not an exception."""
        ...

    async def close(self) -> None:
        ...


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def by_status(status: int, *, expired: tuple[int, ...] = (404, 410)) -> str:
    """The outcome an HTTP status means for most push services."""
    if 200 <= status < 300:
        return DELIVERED
    if status in expired:
        return EXPIRED
    if status == 429 or status >= 500:
        return RETRY
    return REJECTED
