"""Time, injected: the server's parts read wall and monotonic time and wait through a :class:`Clock`.

:class:`SystemClock` is the real one. :class:`ManualClock` stands still until :meth:`ManualClock.advance` moves it,
waking every wait whose time has come, so the ladder, the webhook deliverer and typing can be driven step by step
(a test moves the clock instead of sleeping and hoping the timings hold on a loaded machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol


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
    """A clock that moves only when told to. Wall time starts at ``start`` (default: now), monotonic time at 0.

    :meth:`advance` moves it and wakes the waits that are over; :meth:`settle` returns once every task that has
    waited on this clock is waiting on it again with nothing left to wake it (the work for the new time is done), so
    a test can check what the background loops did without sleeping.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = time.time() if start is None else start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._participants: set[asyncio.Task[Any]] = set()
        # task -> (the event it also waits for, the future the clock resolves when its time is up)
        self._waiting: dict[asyncio.Task[Any], tuple[asyncio.Event | None, asyncio.Future[None]]] = {}
        self._changed = asyncio.Event()

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
        await self._wait(None, seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        await self._wait(event, seconds)

    async def _wait(self, event: asyncio.Event | None, seconds: float) -> None:
        if event is not None and event.is_set():
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        task = asyncio.current_task()
        assert task is not None
        if task not in self._participants:
            self._participants.add(task)
            task.add_done_callback(lambda _: self._changed.set())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._elapsed + seconds, future)
        self._sleepers.append(entry)
        self._waiting[task] = (event, future)
        self._changed.set()
        woken = asyncio.ensure_future(event.wait()) if event is not None else None
        try:
            await asyncio.wait([f for f in (future, woken) if f is not None], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting.pop(task, None)
            if entry in self._sleepers:
                self._sleepers.remove(entry)
            if woken is not None:
                woken.cancel()

    def _idle(self) -> bool:
        for task in self._participants:
            if task.done():
                continue
            waiting = self._waiting.get(task)
            if waiting is None:
                return False  # running: its work is not done
            event, future = waiting
            if future.done() or (event is not None and event.is_set()):
                return False  # about to wake
        return True

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Return once every live task that waits on this clock is waiting again and not about to wake.

        Raises TimeoutError when that does not happen within ``timeout_s`` real seconds (a loop stuck elsewhere).
        """
        async with asyncio.timeout(timeout_s):
            while not self._idle():
                self._changed.clear()
                await self._changed.wait()
