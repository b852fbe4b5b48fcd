"""The unclaimed-escalation ladder: what happens when nobody claims a waiting conversation.

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
:class:`LadderRunner` loop finds due rungs and :class:`LadderService` fires each: each rung is one compare-and-set
on the row's ``next_rung``, so of several processes (or a restarted one) exactly one fires it, and a restart resumes
the ladder where it stopped, firing overdue rungs in order. A rung's in-app and push notices leave after its
transaction commits: a crash in that instant (microseconds) loses that one notice, never the rest of the ladder; the
fallback webhook, written in the same transaction, is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from copilot.live.protocol import EV_STATUS, NOTICE_EXPECTED_WAIT, STATUS_WAITING, WEBHOOK_UNCLAIMED
from handoff.clock import Clock
from handoff.metrics import HandoffMetrics
from handoff.notify import EscalationNotice, Notifier
from handoff.outcomes import Broadcast, Outcome, everyone
from handoff.rules import preview, write_retrying
from handoff.store import EscalationRow, Store, Tx, iso_time

if TYPE_CHECKING:
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
        fire: runs one escalation's due rung (:meth:`LadderService.step` through the delivery, so its broadcasts
            are ordered with everything else on that conversation).
        poll_s: the longest sleep, so rungs written by other processes are found.
        clock: what "due" and "sleep" are measured on.
    """

    def __init__(self, store: Store, fire: Callable[[EscalationRow], Awaitable[Outcome | None]],
                 poll_s: float, clock: Clock) -> None:
        self.store = store
        self.fire = fire
        self.poll_s = poll_s
        self.clock = clock
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
                    next_due = await tx.escalations.next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ladder pass failed; retrying at the next poll")
                next_due = None
            now = self.clock.time()
            if next_due is None:
                delay = self.poll_s
            elif next_due > now:
                delay = min(self.poll_s, next_due - now)
            elif self._failed:  # due rows that failed wait for their retry
                delay = min(self.poll_s, max(0.05, min(self._failed.values()) - now))
            else:  # became due during the pass
                delay = 0.0
            if delay > 0:
                await self.clock.wait(self._wakeup, delay)
            self._wakeup.clear()

    async def fire_due(self) -> int:
        """Fire every rung due now (overdue ones in order); returns how many rungs fired."""
        fired = 0
        now = self.clock.time()
        self._failed = {key: at for key, at in self._failed.items() if at > now}  # due for a retry: try again
        while True:
            now = self.clock.time()
            async with self.store.read() as tx:
                due = [row for row in await tx.escalations.due(now, 100)
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
                    self._failed[key] = self.clock.time() + self.poll_s
            fired += progressed
            if progressed == 0:
                # Every due row was taken by another process or is being handled: look again at the next pass.
                return fired



@dataclass(frozen=True)
class _Fired:
    """What one rung's transaction did: the outcome, the rung fired ("" if none) and the reminder to send."""

    outcome: Outcome | None
    rung: str = ""
    notice: EscalationNotice | None = None


class LadderService:
    """Fires an escalation's due rung.

    Args:
        store: the database.
        clock: wall time (due times are epoch seconds).
        notifier: sends reminders, as for the escalation itself.
        metrics: counts the rungs fired.
        ladder: the server's default ladder (a bot's own settings override it).
        expected_wait_samples: how many recent times to claim the expected wait is estimated from.
    """

    def __init__(self, store: Store, *, clock: Clock, notifier: Notifier, metrics: HandoffMetrics,
                 ladder: LadderConfig, expected_wait_samples: int = 50) -> None:
        self.store = store
        self.clock = clock
        self.notifier = notifier
        self.metrics = metrics
        self.ladder = ladder
        self.expected_wait_samples = expected_wait_samples

    async def step(self, row: EscalationRow) -> Outcome | None:
        """Fire the escalation's due rung, if it is still due and the conversation still waits for this escalation.

        One transaction reads the row, checks the conversation, and moves ``next_rung`` on with a compare-and-set
        (so exactly one process fires a rung); the fallback webhook is written to the outbox in that same
        transaction. The reminder and the wait notice leave after the commit. Returns None when there was nothing
        to do (claimed meanwhile, fired by another process, not due yet).
        """
        now = self.clock.time()
        fired = await write_retrying(self.store, lambda tx: self._fire(tx, row, now))
        if fired.rung:
            self.metrics.rungs.labels(row.bot_id, fired.rung).inc()
            log.info("ladder: %s of %s@%d fired", fired.rung, row.conversation_id, row.escalated_seq)
        if fired.notice is not None:
            await self.notifier.escalated(fired.notice)
        return fired.outcome

    async def _fire(self, tx: Tx, row: EscalationRow, now: float) -> _Fired:
        esc = await tx.escalations.get(row.conversation_id, row.escalated_seq)
        if esc is None or esc.due_at is None or esc.due_at > now:
            return _Fired(None)
        conv = await tx.conversations.get(esc.conversation_id)
        if conv is None or conv.status != STATUS_WAITING or esc.next_rung >= len(esc.plan) \
                or await tx.events.latest_escalation_seq(conv.conversation_id) != esc.escalated_seq:
            await tx.escalations.end_ladder(esc.conversation_id, esc.escalated_seq)  # the escalation is over
            return _Fired(None)
        rung = esc.plan[esc.next_rung][1]
        after = esc.plan[esc.next_rung + 1][0] if esc.next_rung + 1 < len(esc.plan) else None
        if not await tx.escalations.advance_rung(esc.conversation_id, esc.escalated_seq, esc.next_rung, after):
            return _Fired(None)  # another process fired it
        waited = now - esc.escalated_at
        out = Outcome()
        bot = await tx.bots.get(conv.bot_id)
        text = preview(await tx.events.last_customer_text(conv.conversation_id))
        if rung == RUNG_RENOTIFY:
            reminders = sum(1 for _, r in esc.plan[: esc.next_rung + 1] if r == RUNG_RENOTIFY)
            notice = EscalationNotice(conv.conversation_id, conv.bot_id, conv.reason, text,
                                      conv.waiting_since or iso_time(now), esc.escalated_seq,
                                      bot_name=bot.name if bot else conv.bot_id, renotify=reminders)
            return _Fired(out, rung, notice)
        expected = expected_wait(await tx.escalations.recent_claim_times(conv.bot_id, self.expected_wait_samples),
                                 waited)
        if rung == RUNG_WAIT_NOTICE:
            payload = {"conversation_id": conv.conversation_id, "status": conv.status,
                       "notice": NOTICE_EXPECTED_WAIT, "expected_wait_s": expected, "waited_s": round(waited, 1),
                       "waiting_since": conv.waiting_since}
            out.broadcasts.append(Broadcast(EV_STATUS, payload, everyone(conv.conversation_id, conv.bot_id),
                                            skip_sender=False))
        elif rung == RUNG_FALLBACK:
            url = self.ladder.merged(bot.ladder if bot else None).fallback_webhook
            if url:
                body = {"event": WEBHOOK_UNCLAIMED, "bot_id": conv.bot_id, "conversation_id": conv.conversation_id,
                        "seq": esc.escalated_seq, "reason": conv.reason, "preview": text,
                        "waiting_since": conv.waiting_since, "waited_s": round(waited, 1),
                        "expected_wait_s": expected}
                await tx.webhooks.enqueue(conv.bot_id, conv.conversation_id, url, body, now)
                out.webhook_enqueued = True
        return _Fired(out, rung)
