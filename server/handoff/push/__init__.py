"""Push notifications to agents' devices: one fan-out per escalation, in parallel, off the chat path.

:class:`PushNotifier` is a :class:`~handoff.notify.Notifier`: told about an escalation (or a ladder reminder), it
starts a background task and returns at once, so neither the escalation's ack nor the in-app ``escalation`` event
ever waits for a push service. The task reads every registered device of every agent registered for the bot and
pushes to all of them at once (at most ``HANDOFF_PUSH_PARALLEL`` requests in flight), each through the sender of its
kind behind one interface (:class:`~handoff.push.base.PushSender`): Web Push (VAPID + aes128gcm,
handoff.push.webpush), FCM HTTP v1 (handoff.push.fcm), APNs over HTTP/2 (handoff.push.apns).

Per device: 429, 5xx and no answer are retried with exponential backoff (or the service's ``Retry-After``), at most
``HANDOFF_PUSH_MAX_ATTEMPTS`` times and never past the message's TTL; 404/410 mean the subscription is gone, and the
device is removed; any other refusal is final. Every final outcome is stored (table ``push_deliveries``: delivered,
expired, rejected, gave_up, skipped), logged when it is not a delivery, and counted (``handoff_pushes_sent_total``,
``handoff_pushes_failed_total{reason}``, ``handoff_push_retries_total``). Retries live in memory: a fan-out cut by
a restart is not resumed (the message would be stale by then); the unclaimed-escalation ladder notifies again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from py_vapid import VapidException

from handoff.metrics import HandoffMetrics
from handoff.notify import EscalationNotice
from handoff.push.base import DELIVERED, EXPIRED, REJECTED, RETRY, Attempt, PushMessage, PushSender
from handoff.settings import Settings, SettingsError
from handoff.store import DeviceRow, Store

log = logging.getLogger(__name__)

GAVE_UP = "gave_up"  # retries exhausted (or the TTL would pass first)
SKIPPED = "skipped"  # no sender configured for the device's kind

__all__ = ["PushMessage", "PushNotifier", "PushSender", "build_push", "message_for"]


# Push services take about 4 KB (Web Push: 4096 bytes of encrypted body, FCM and APNs: 4 KB of payload): the
# free-text fields are shortened until the message fits with room for the encoding's overhead.
MAX_MESSAGE_BYTES = 2800


def message_for(notice: EscalationNotice, ttl_s: int, urgency: str) -> PushMessage:
    """The notification for an escalation or a reminder: the bot, a preview, the conversation to open."""
    limit = 200
    while True:
        name = (notice.bot_name or notice.bot_id)[:limit]
        title = f"{name}: a customer is waiting" if notice.renotify == 0 else f"{name}: still waiting for an agent"
        reason = (notice.reason or "")[:limit]
        preview = (notice.preview or "")[:limit]
        body = preview or reason or "A conversation needs an agent."
        data = {"type": "escalation", "conversation_id": notice.conversation_id, "bot_id": notice.bot_id,
                "seq": str(notice.seq), "renotify": str(notice.renotify), "waiting_since": notice.waiting_since,
                "reason": reason, "preview": preview}
        message = PushMessage(title, body, data, ttl_s, urgency, collapse_key=notice.conversation_id)
        if len(message.web_payload_bytes()) <= MAX_MESSAGE_BYTES or limit <= 10:
            return message
        limit //= 2


class PushNotifier:
    """Fans every escalation out to the devices of the bot's agents (see the module's docstring).

    Args:
        store: where devices are read and outcomes written.
        senders: one sender per device kind that is configured (a device of another kind is ``skipped``).
        settings: TTL, urgency, retries, parallelism.
        metrics: where outcomes are counted.
        session: the aiohttp session the senders share; closed with the notifier.
    """

    def __init__(self, store: Store, senders: Mapping[str, PushSender], settings: Settings,
                 metrics: HandoffMetrics, session: aiohttp.ClientSession | None = None) -> None:
        self.store = store
        self.senders = dict(senders)
        self.settings = settings
        self.metrics = metrics
        self.session = session
        self.tasks: set[asyncio.Task[Any]] = set()

    async def escalated(self, notice: EscalationNotice) -> None:
        """Start the fan-out and return at once."""
        task = asyncio.ensure_future(self.fan_out(notice))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def fan_out(self, notice: EscalationNotice) -> list[dict[str, Any]]:
        """Push to every device of every agent registered for the bot; returns the stored outcome rows."""
        started = time.monotonic()
        try:
            async with self.store.read() as tx:
                devices = await tx.devices.for_bot(notice.bot_id)
            if not devices:
                return []
            message = message_for(notice, self.settings.push_ttl_s, self.settings.push_urgency)
            gate = asyncio.Semaphore(self.settings.push_parallel)
            pushes = []
            for device in devices:
                pushes.append(asyncio.ensure_future(self._deliver(device, message, notice, started, gate)))
                # Each push starts with its encryption (a fraction of a millisecond of CPU): start them one at a
                # time, letting chat events ready meanwhile run in between instead of behind the whole burst.
                await asyncio.sleep(0)
            rows = await asyncio.gather(*pushes)
            expired = [r["device_id"] for r in rows if r["outcome"] == EXPIRED]

            async def record(tx: Any) -> None:
                await tx.push_deliveries.insert(rows)
                await tx.devices.delete_many(expired)

            await self.store.write(record)
            delivered = sum(r["outcome"] == DELIVERED for r in rows)
            log.info("pushes for %s@%d (renotify %d): %d of %d delivered in %.0f ms%s", notice.conversation_id,
                     notice.seq, notice.renotify, delivered, len(rows), (time.monotonic() - started) * 1000,
                     f", {len(expired)} expired device(s) removed" if expired else "")
            return list(rows)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push fan-out for %s@%d failed", notice.conversation_id, notice.seq)
            return []

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failures: doubling, capped."""
        return float(min(self.settings.push_backoff_max_s, self.settings.push_backoff_s * 2 ** (attempts - 1)))

    async def _deliver(self, device: DeviceRow, message: PushMessage, notice: EscalationNotice, started: float,
                       gate: asyncio.Semaphore) -> dict[str, Any]:
        sender = self.senders.get(device.kind)
        attempts = 0
        if sender is None:
            result = Attempt(SKIPPED, None, f"no {device.kind} credentials are configured on this server")
        else:
            deadline = started + message.ttl_s
            while True:
                attempts += 1
                try:
                    async with gate:
                        result = await sender.send(device, message)
                except Exception as exc:  # a malformed subscription, a bug: final, and loud
                    log.exception("push to device %s (%s) failed", device.device_id, device.kind)
                    result = Attempt(REJECTED, None, f"{type(exc).__name__}: {exc}")
                if result.outcome != RETRY:
                    break
                delay = min(self.settings.push_backoff_max_s,
                            result.retry_after_s if result.retry_after_s is not None else self.backoff(attempts))
                if attempts >= self.settings.push_max_attempts or time.monotonic() + delay >= deadline:
                    result = Attempt(GAVE_UP, result.status, result.error)
                    break
                self.metrics.push_retries.labels(device.kind).inc()
                log.info("push to device %s (%s) will be retried in %.1f s: %s", device.device_id, device.kind,
                         delay, result.error)
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - started
        if result.outcome == DELIVERED:
            self.metrics.pushes_sent.labels(device.kind).inc()
            self.metrics.push_seconds.labels(device.kind).observe(elapsed)
        else:
            self.metrics.pushes_failed.labels(device.kind, result.outcome).inc()
            level = logging.INFO if result.outcome == EXPIRED else logging.WARNING
            log.log(level, "push to device %s of %s (%s) %s after %d attempt(s): %s", device.device_id,
                    device.agent_id, device.kind, result.outcome, attempts, result.error)
        return {"device_id": device.device_id, "agent_id": device.agent_id, "kind": device.kind,
                "conversation_id": notice.conversation_id, "escalated_seq": notice.seq, "renotify": notice.renotify,
                "outcome": result.outcome, "status": result.status, "attempts": attempts, "error": result.error,
                "latency_ms": elapsed * 1000.0, "created_at": time.time()}

    async def close(self) -> None:
        """Cancel fan-outs still running (their retries), then close the senders and the session."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for sender in self.senders.values():
            await sender.close()
        if self.session is not None:
            await self.session.close()


async def build_push(settings: Settings, store: Store, metrics: HandoffMetrics) -> tuple[PushNotifier, str]:
    """The push notifier with a sender for every configured kind, and the VAPID public key (base64url).

    Web Push is always on (its key is generated when none is configured); FCM needs a service-account file, APNs
    its four settings. Raises SettingsError for unusable keys or files.
    """
    from handoff.push.apns import ApnsSender, load_p8
    from handoff.push.fcm import FcmSender, ServiceAccount
    from handoff.push.webpush import WebPushSender, load_vapid, public_key_b64

    vapid = await load_vapid(settings, store)
    senders: dict[str, PushSender] = {}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(100, settings.push_parallel)))
    try:
        webpush = WebPushSender(vapid, settings.vapid_subject, session, settings.push_timeout_s)
        try:
            webpush.authorization("https://push.example.com")  # a subject py_vapid refuses fails here, at start-up
        except VapidException as exc:
            raise SettingsError(f"HANDOFF_VAPID_SUBJECT {settings.vapid_subject!r}: {exc}") from None
        senders[webpush.kind] = webpush
        if settings.fcm_service_account_file is not None:
            account = ServiceAccount(settings.fcm_service_account_file)
            senders["fcm"] = FcmSender(account, settings.fcm_endpoint, session, settings.push_timeout_s)
        if settings.apns_key_file is not None:
            assert settings.apns_key_id and settings.apns_team_id and settings.apns_topic  # Settings checks
            senders["apns"] = ApnsSender(load_p8(settings.apns_key_file), settings.apns_key_id, settings.apns_team_id,
                                         settings.apns_topic, settings.apns_endpoint, settings.push_timeout_s)
    except BaseException:
        for sender in senders.values():
            await sender.close()
        await session.close()
        raise
    return PushNotifier(store, senders, settings, metrics, session), public_key_b64(vapid)
