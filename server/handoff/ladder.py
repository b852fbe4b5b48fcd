"""The unclaimed-escalation ladder (B10): what happens when nobody claims a waiting conversation.

Each bot has a ladder (its own ``ladder`` settings, else the server's ``HANDOFF_LADDER_*`` defaults) of up to three
rungs, each some seconds after the escalation:

- ``renotify``: notify the bot's agents again, in-app and by push (the same :class:`~handoff.notify.Notifier` as the
  escalation, with ``renotify`` counting up);
- ``wait_notice``: tell the customer (and the bot, which may relay it) the expected wait with a ``status`` event,
  estimated from the bot's recent times to claim (:func:`expected_wait`);
- ``fallback``: POST the bot's ``fallback_webhook`` (an e-mail or SMS gateway, a pager), through the same durable
  outbox as the hand-back webhook (handoff.webhooks), so it is retried and survives restarts.

The escalation stores its plan (the rungs with their due times) in the ``escalations`` table in the same transaction
as the ``escalated`` event; a claim clears the due time in the claim's transaction, which stops the ladder. The
:class:`LadderRunner` loop fires due rungs: each rung is one compare-and-set on the row's ``next_rung``, so of
several processes (or a restarted one) exactly one fires it, and a restart resumes the ladder where it stopped,
firing overdue rungs in order. A rung's in-app and push notices leave after its transaction commits: a crash in
that instant (microseconds) loses that one notice, never the rest of the ladder; the fallback webhook, written in
the same transaction, is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from handoff.store import EscalationRow, Store

if TYPE_CHECKING:
    from handoff.service import Outcome
    from handoff.settings import Settings

log = logging.getLogger(__name__)

RUNG_RENOTIFY = "renotify"
RUNG_WAIT_NOTICE = "wait_notice"
RUNG_FALLBACK = "fallback"
RUNGS = (RUNG_RENOTIFY, RUNG_WAIT_NOTICE, RUNG_FALLBACK)  # rungs due at the same time fire in this order
LADDER_KEYS = ("renotify_after_s", "wait_notice_after_s", "fallback_after_s", "fallback_webhook")


@dataclass(frozen=True)
class LadderConfig:
    """One bot's effective ladder: seconds after the escalation for each rung (None: the rung is off)."""

    renotify_after_s: float | None
    wait_notice_after_s: float | None
    fallback_after_s: float | None
    fallback_webhook: str | None

    @classmethod
    def defaults(cls, settings: Settings) -> LadderConfig:
        """The server's ladder (``HANDOFF_LADDER_*``); no fallback webhook, which only a bot can name."""
        return cls(settings.ladder_renotify_after_s, settings.ladder_wait_notice_after_s,
                   settings.ladder_fallback_after_s, None)

    def merged(self, own: Mapping[str, Any] | None) -> LadderConfig:
        """This ladder with a bot's own settings on top: a key the bot set wins (null turns a rung off)."""
        if not own:
            return self
        values = asdict(self)
        values.update({k: own[k] for k in LADDER_KEYS if k in own})
        return LadderConfig(**values)

    def plan(self, escalated_at: float) -> list[tuple[float, str]]:
        """The rungs as (due epoch seconds, rung) in firing order. The fallback needs a webhook to call."""
        after = {RUNG_RENOTIFY: self.renotify_after_s, RUNG_WAIT_NOTICE: self.wait_notice_after_s,
                 RUNG_FALLBACK: self.fallback_after_s if self.fallback_webhook else None}
        rungs = [(escalated_at + s, rung) for rung, s in after.items() if s is not None]
        return sorted(rungs, key=lambda r: (r[0], RUNGS.index(r[1])))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_wait(times_to_claim: Sequence[float], waited_s: float) -> float | None:
    """The expected remaining wait of a customer who has waited ``waited_s``, from recent times to claim.

    Of the recent escalations, those that took longer than this one has already waited say how much longer such a
    wait lasts: the median of their remainders. None when no recent escalation waited this long (nothing honest to
    say), or when there is no history.
    """
    remaining = [t - waited_s for t in times_to_claim if t > waited_s]
    if not remaining:
        return None
    return round(float(statistics.median(remaining)), 1)


class LadderRunner:
    """The loop that fires due rungs. Call :meth:`wake` when a ladder starts; :meth:`run` is the loop.

    Args:
        store: the database (due rows are read here; each rung is fired through ``fire``).
        fire: runs one escalation's due rung (the service's ``ladder_step`` through the delivery, so its broadcasts
            are ordered with everything else on that conversation).
        poll_s: the longest sleep, so rungs written by other processes are found.
    """

    def __init__(self, store: Store, fire: Callable[[EscalationRow], Awaitable[Outcome | None]],
                 poll_s: float) -> None:
        self.store = store
        self.fire = fire
        self.poll_s = poll_s
        self._wakeup = asyncio.Event()
        # A rung that failed (a bug, the database gone) is retried after a pause, not in a tight loop.
        self._failed: dict[tuple[str, int], float] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Fire what is due, then sleep until the next due time, a wake-up or the poll period; forever."""
        while True:
            try:
                await self.fire_due()
                async with self.store.read() as tx:
                    next_due = await tx.next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ladder pass failed; retrying at the next poll")
                next_due = None
            now = time.time()
            if next_due is None:
                delay = self.poll_s
            elif next_due > now:
                delay = min(self.poll_s, next_due - now)
            elif self._failed:  # due rows that failed wait for their retry
                delay = min(self.poll_s, max(0.05, min(self._failed.values()) - now))
            else:  # became due during the pass
                delay = 0.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
            self._wakeup.clear()

    async def fire_due(self) -> int:
        """Fire every rung due now (overdue ones in order); returns how many rungs fired."""
        fired = 0
        now = time.time()
        self._failed = {key: at for key, at in self._failed.items() if at > now}  # due for a retry: try again
        while True:
            now = time.time()
            async with self.store.read() as tx:
                due = [row for row in await tx.due_escalations(now, 100)
                       if self._failed.get((row.conversation_id, row.escalated_seq), 0.0) <= now]
            if not due:
                return fired
            progressed = 0
            for row in due:
                key = (row.conversation_id, row.escalated_seq)
                try:
                    if await self.fire(row) is not None:
                        progressed += 1
                    self._failed.pop(key, None)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ladder rung of %s@%d failed; retrying in %.1f s", row.conversation_id,
                                  row.escalated_seq, self.poll_s)
                    self._failed[key] = time.time() + self.poll_s
            fired += progressed
            if progressed == 0:
                # Every due row was taken by another process or is being handled: look again at the next pass.
                return fired


async def running(runner: LadderRunner) -> AsyncIterator[None]:
    """The ladder's loop for the lifetime of the app (an ``app.cleanup_ctx`` generator body)."""
    task = asyncio.ensure_future(runner.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
