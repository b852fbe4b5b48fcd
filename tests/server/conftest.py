"""Fixtures of the server tests: the database parametrized over SQLite (a file per test) and PostgreSQL (a
database created for this test session and dropped afterwards; skipped with the reason when unreachable), and real
servers on 127.0.0.1 port 0 in the test's event loop. Helpers live in handoff_testing.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from handoff_testing import (
    POSTGRES_ADMIN_URL,
    Server,
    StartServer,
    _pg_admin,
    _replace_db,
    server_starter,
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session (other helpers share the server), dropped after."""
    name = f"handoff_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, ImportError) as exc:
        pytest.skip(f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL} ({exc}); set HANDOFF_TEST_POSTGRES_URL")
    except Exception as exc:  # asyncpg's own errors: refused authentication, missing database, ...
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} refused to create a test database: {exc}")
    url = _replace_db(POSTGRES_ADMIN_URL, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of one test: a fresh SQLite file, or the session's PostgreSQL database (ids are unique)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'handoff.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def start_server(database_url: str) -> AsyncIterator[StartServer]:
    """Start servers in this test's event loop: ``await start_server(provider=..., **settings_overrides)``."""
    async with server_starter(database_url) as start:
        yield start


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """One running server with default test settings."""
    return await start_server()


