"""Time, injected: the server's parts read wall and monotonic time and wait through a :class:`Clock`.

:class:`SystemClock` is the real one. :class:`ManualClock` stands still until :meth:`ManualClock.advance` moves it,
waking every wait whose time has come, so the ladder, the webhook deliverer and typing can be driven step by step
(a test moves the clock instead of sleeping and hoping the timings hold on a loaded machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall time, epoch seconds (stored, compared across processes)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations within one process)."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        """Return when ``event`` is set or ``seconds`` have passed on this clock, whichever comes first."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to. Wall time starts at ``start`` (default: now), monotonic time at 0."""

    def __init__(self, start: float | None = None) -> None:
        self._start = time.time() if start is None else start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every wait that is over by then."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed += seconds
        due = [s for s in self._sleepers if s[0] <= self._elapsed]
        self._sleepers = [s for s in self._sleepers if s[0] > self._elapsed]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._elapsed + seconds, future))
        await future

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        if event.is_set():
            return
        woken = asyncio.ensure_future(event.wait())
        slept = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, slept):
                task.cancel()
