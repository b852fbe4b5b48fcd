"""The app's background loops: each runs for the lifetime of the app and is cancelled when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable


async def running(loop: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``loop()`` while the caller's block runs (an async generator body, e.g. for ``app.cleanup_ctx``)."""
    task = asyncio.ensure_future(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
