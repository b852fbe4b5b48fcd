"""Webhooks (the hand back's, the ladder's fallback): delivered from a durable outbox, at least once, with retries
and a timeout.

The hand back writes a row into ``webhook_outbox`` in the same transaction as the ``handed_back`` event (and the
ladder its fallback's row with the rung), so a webhook exists exactly when the hand back happened.
:class:`WebhookDeliverer` (a background loop of the app) POSTs due rows: a 2xx answer marks a row delivered;
anything else (an error status, a refused connection, a timeout) is logged and retried with exponential backoff,
until ``webhook_max_attempts``, after which the row is marked ``failed`` and logged as an error. Nothing is lost
silently: every failure is in the log and in the row (``attempts``, ``last_error``), and a restarted server picks up
every pending row.

A process that dies in the middle of an attempt leaves the row leased for ``webhook_timeout_s + 5`` seconds;
after that any process retries it. Receivers should treat ``X-Handoff-Delivery`` as an idempotency key: a crash
between the POST and marking the row delivered sends it again. With ``HANDOFF_WEBHOOK_SECRET`` set,
``X-Handoff-Signature: sha256=<hex>`` is the HMAC-SHA256 of the raw body with that secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

import aiohttp

from handoff.clock import Clock
from handoff.settings import Settings
from handoff.store import OutboxRow, Store

log = logging.getLogger(__name__)

_BATCH = 50
_PARALLEL = 8


class WebhookDeliverer:
    """Delivers the outbox. Call :meth:`wake` after enqueueing; :meth:`run` is the loop."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: doubling from webhook_backoff_s, capped."""
        return float(min(self.settings.webhook_backoff_max_s, self.settings.webhook_backoff_s * 2 ** (attempts - 1)))

    async def run(self) -> None:
        """Deliver what is due, then sleep until woken or until the next poll; forever (cancel to stop)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while True:
                try:
                    delivered = await self.deliver_due()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook delivery pass failed; retrying at the next poll")
                    delivered = 0
                if delivered < _BATCH:  # a full batch means more may be due: go on at once
                    await self.clock.wait(self._wakeup, self.settings.webhook_poll_s)
                self._wakeup.clear()

    async def deliver_due(self) -> int:
        """One pass over the due rows (at most a batch); returns how many rows it attempted."""
        now = self.clock.time()
        async with self.store.read() as tx:
            due = await tx.webhooks.due(now, _BATCH)
        if not due:
            return 0
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(row: OutboxRow) -> None:
            async with gate:
                await self._attempt(row)

        await asyncio.gather(*(one(row) for row in due))
        return len(due)

    async def _attempt(self, row: OutboxRow) -> None:
        now = self.clock.time()
        # A lease, not a lock: if this process dies mid-attempt, the row is free again when it runs out.
        until = now + self.settings.webhook_timeout_s + 5.0
        # Another process may be on it: take it for the duration of one attempt, or leave it.
        if not await self.store.write(lambda tx: tx.webhooks.lock(row.id, now, until)):
            return
        attempts = row.attempts + 1
        error = await self._post(row, attempts)
        if error is None:
            state, next_at = "delivered", now
            log.info("webhook %d for %s delivered to %s (attempt %d)", row.id, row.conversation_id, row.url,
                     attempts)
        elif attempts >= self.settings.webhook_max_attempts:
            state, next_at = "failed", now
            log.error("webhook %d for %s to %s FAILED for good after %d attempts: %s", row.id, row.conversation_id,
                      row.url, attempts, error)
        else:
            state, next_at = "pending", self.clock.time() + self.backoff(attempts)
            log.warning("webhook %d for %s to %s failed (attempt %d of %d, next in %.1f s): %s", row.id,
                        row.conversation_id, row.url, attempts, self.settings.webhook_max_attempts,
                        next_at - self.clock.time(), error)
        finished = self.clock.time()
        await self.store.write(lambda tx: tx.webhooks.finish(row.id, state=state, attempts=attempts,
                                                             next_attempt_at=next_at, error=error, now=finished))

    async def _post(self, row: OutboxRow, attempt: int) -> str | None:
        """POST one row; None on a 2xx answer, else what went wrong."""
        assert self._session is not None, "run() opens the session"
        body = row.payload.encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Handoff-Delivery": str(row.id),
                   "X-Handoff-Attempt": str(attempt), "User-Agent": "copilot-handoff"}
        if self.settings.webhook_secret:
            digest = hmac.new(self.settings.webhook_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
            headers["X-Handoff-Signature"] = f"sha256={digest}"
        try:
            async with self._session.post(row.url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.settings.webhook_timeout_s} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

