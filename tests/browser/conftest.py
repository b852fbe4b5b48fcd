"""Fixtures of the browser tests: Debian's Chromium driven by Playwright for Python (skipped, with the reason, only
when no Chromium can be found), real servers on 127.0.0.1 port 0 in the test's event loop (the server tests'
helpers, on a SQLite file per test: the pages are clients, the databases are covered by tests/server), and the
folder the screenshots go to."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from handoff_testing import StartServer, server_starter

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"  # git-ignored
# Chromium cannot fetch anything on this machine, and the tests need none of its background services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("HANDOFF_TEST_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium found at /usr/bin/chromium: `apt-get install -y chromium` (make test does it where "
                    "apt-get is available) or point HANDOFF_TEST_CHROMIUM at one")
    return path


@pytest.fixture
async def browser(chromium_path: str, start_server: StartServer) -> AsyncIterator[Any]:
    """A headless Chromium for this test (about a second to start). It closes before the test's servers stop
    (hence ``start_server`` here): pages left connected would reconnect during the shutdown and hold it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Iterator[Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield SCREENSHOTS


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start servers in this test's event loop: ``await start_server(provider=..., **settings_overrides)``.

    Typing runs at the production pace (the server tests shorten it): an indicator must outlive a slow check."""
    database_url = f"sqlite:///{tmp_path / 'handoff.db'}"
    async with server_starter(database_url, typing_timeout_s=5.0, typing_throttle_s=1.0) as start:
        yield start
