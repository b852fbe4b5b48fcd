"""The server's parts on their own: the state machine table, typing and rate-limit bookkeeping, settings, the pilot
file, the migrations against the schema, the command line, and docs/protocol.md against copilot.live.protocol."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from handoff.errors import HandoffError
from handoff.pilot import PilotFileError, load_pilot
from handoff.ratelimit import KeyedBuckets, TokenBucket
from handoff.settings import Settings, SettingsError
from handoff.states import TRANSITIONS, Action, InvalidTransition, Status, may_write, transition
from handoff.store import PostgresStore, SqliteStore, Tx, metadata, open_store
from handoff.typing import TypingTracker
from handoff_testing import ADMIN_KEY, Server, serve_process
from sqlalchemy.engine import Connection

from copilot.live import protocol

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PILOT = ROOT / "server" / "pilot.example.toml"


def test_every_move_not_in_the_table_is_refused() -> None:
    roles = ("customer", "bot", "agent")
    legal = {(s, a, r) for (s, a), (_, rs) in TRANSITIONS.items() for r in rs}
    for status in Status:
        for action in Action:
            for role in roles:
                if (status, action, role) in legal:
                    assert transition(status, action, role) == TRANSITIONS[(status, action)][0]
                else:
                    with pytest.raises(HandoffError) as err:
                        transition(status, action, role)
                    assert err.value.code in ("invalid_transition", "forbidden")
    assert transition(Status.WAITING, Action.CLAIM, "agent") == Status.CLAIMED
    with pytest.raises(InvalidTransition):
        transition(Status.CLAIMED, Action.CLAIM, "agent")
    with pytest.raises(InvalidTransition):
        may_write("bot", Status.CLAIMED)
    may_write("customer", Status.RESOLVED)  # writing reopens


def test_typing_tracker_throttles_and_expires() -> None:
    tracker = TypingTracker(timeout_s=5.0, throttle_s=1.0)
    key = ("c", "customer", "u")
    assert tracker.update(key, "start", 0.0, "sid1", "target") is True
    assert tracker.update(key, "start", 0.5, "sid1", "target") is False  # throttled, but refreshes expiry
    assert tracker.expire(5.2) == []  # refreshed at 0.5: expires at 5.5
    assert tracker.expire(5.5) == [(key, "target")]
    assert tracker.update(key, "stop", 6.0, "sid1") is False  # a stop with nothing forwarded tells nobody
    assert tracker.update(key, "start", 7.0, "sid1", "t") is True
    assert tracker.drop_holder("sid1") == [(key, "t")] and len(tracker) == 0


def test_token_bucket_allows_the_rate_and_refuses_beyond() -> None:
    bucket = TokenBucket(rate=20.0, burst=20, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(20))
    assert bucket.take(0.0) == pytest.approx(0.05)
    assert bucket.take(0.05) == 0.0  # one token back after 1/20 s
    steady = TokenBucket(rate=20.0, burst=1, now=0.0)
    assert all(steady.take(i / 20) == 0.0 for i in range(1, 200))  # 20 per second, sustained
    keyed = KeyedBuckets(rate=1.0, burst=1, max_keys=2)
    assert keyed.take("a", 0.0) == 0.0 and keyed.take("a", 0.0) > 0


def test_settings_from_the_environment_name_the_bad_variable(tmp_path: Path) -> None:
    env = {"HANDOFF_DATABASE_URL": "postgresql+asyncpg://u@h/db", "HANDOFF_TYPING_TIMEOUT_S": "2.5",
           "HANDOFF_CORS_ORIGINS": "https://a.example, https://b.example", "HANDOFF_ADMIN_KEY": "",
           "HANDOFF_PILOT_FILE": str(tmp_path / "p.toml")}
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql+asyncpg://u@h/db" and settings.typing_timeout_s == 2.5
    assert settings.cors_origins == ("https://a.example", "https://b.example") and settings.admin_key is None
    assert settings.pilot_file == tmp_path / "p.toml"
    assert Settings.from_env({}).database_url == "sqlite:///handoff.db"
    with pytest.raises(SettingsError, match="HANDOFF_RATE_LIMIT_PER_S"):
        Settings.from_env({"HANDOFF_RATE_LIMIT_PER_S": "fast"})
    with pytest.raises(SettingsError, match="HANDOFF_TYPING_TIMEOUT_S"):
        Settings.from_env({"HANDOFF_TYPING_TIMEOUT_S": "0"})


def test_the_example_pilot_file_loads_and_bad_ones_say_why(tmp_path: Path) -> None:
    pilot = load_pilot(EXAMPLE_PILOT)
    assert [b.bot.bot_id for b in pilot.bots] == ["card_support", "bank_balance+restaurant_book+weather"]
    assert {a.agent.agent_id: a.agent.bots for a in pilot.agents}["bob"] == ("card_support",)
    bad = tmp_path / "bad.toml"
    for text, message in [
        ('[[bots]]\nbot_id = "b"\nname = "B"\napi_key = "short"\n', "at least 24"),
        ('[[bots]]\nbot_id = "bad id"\nname = "B"\napi_key = "' + "k" * 30 + '"\n', "bot_id"),
        ('[[robots]]\n', "unknown section"),
        ('[[bots]\n', "bad.toml"),
    ]:
        bad.write_text(text)
        with pytest.raises(PilotFileError, match=message):
            load_pilot(bad)


async def test_migrations_create_exactly_the_declared_schema(database_url: str) -> None:
    """The alembic migrations and handoff.store.metadata agree (autogenerate finds nothing to do), twice over."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    await (await open_store(database_url)).close()
    store = await open_store(database_url)  # a second run finds nothing to do
    try:
        def diff(conn: Connection) -> list[object]:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))

        if isinstance(store, SqliteStore):
            with store.engine.connect() as conn:
                assert diff(conn) == []
        else:
            assert isinstance(store, PostgresStore)
            async with store.engine.connect() as aconn:
                assert await aconn.run_sync(diff) == []
    finally:
        await store.close()


def test_protocol_doc_names_every_event_and_error_code() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    names = [v for k, v in vars(protocol).items() if k.startswith(("EV_", "ERR_", "KIND_", "STATUS_"))]
    missing = [n for n in names if not re.search(rf"`{re.escape(str(n))}`", doc)]
    assert missing == []
    assert "## Additions" in doc


async def test_serve_applies_the_pilot_file(database_url: str, tmp_path: Path) -> None:
    import aiohttp

    process = serve_process(database_url, "--pilot", str(EXAMPLE_PILOT))
    try:
        async with aiohttp.ClientSession() as http:
            server = Server(process.url, None, http)
            me = await server.expect("GET", "/agents/me", "example-agent-token-alice-change-me-0001")
            assert me["id"] == "alice" and me["bots"] == ["bank_balance+restaurant_book+weather", "card_support"]
            created = await server.expect("POST", "/bots/bank_balance+restaurant_book+weather/conversations",
                                          "example-bot-key-concierge-change-me-0001", json={})
            assert created["status"] == "bot"
            status, _ = await server.request("POST", "/bots", ADMIN_KEY, json={"bot_id": "card_support", "name": "x"})
            assert status == 409  # declared by the pilot file
        assert process.stop() == 0
    finally:
        if process.proc.poll() is None:
            process.kill()


def test_serve_refuses_bad_settings_with_exit_code_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {"HANDOFF_TYPING_TIMEOUT_S": "soon", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "handoff", "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "HANDOFF_TYPING_TIMEOUT_S" in done.stderr


async def test_a_failing_write_rolls_back_alone_in_its_batch(database_url: str) -> None:
    """Writes that share a transaction (SQLite's group commit): one that fails after writing keeps nothing, the
    others commit; and on SQLite an operation that awaits anything but its Tx is refused, storing nothing."""
    store = await open_store(database_url, sqlite_synchronous="NORMAL")
    try:
        bots = [f"batch-{uuid.uuid4().hex[:8]}" for _ in range(6)]

        async def good(tx: Tx, bot_id: str) -> str:
            await tx.bots.insert(bot_id, "ok", None)
            return bot_id

        async def bad(tx: Tx, bot_id: str) -> str:
            await tx.bots.insert(bot_id, "written, then refused", None)
            raise HandoffError("invalid_payload", "refused after writing")

        results = await asyncio.gather(*(store.write(lambda tx, b=b, i=i: (bad if i == 2 else good)(tx, b))
                                         for i, b in enumerate(bots)), return_exceptions=True)
        assert isinstance(results[2], HandoffError)
        assert [r for i, r in enumerate(results) if i != 2] == [b for i, b in enumerate(bots) if i != 2]
        async with store.read() as tx:
            assert await tx.bots.existing(bots) == {b for i, b in enumerate(bots) if i != 2}

        if isinstance(store, SqliteStore):
            async def wanders_off(tx: Tx) -> None:
                await tx.bots.insert("wanderer-" + bots[0], "x", None)
                await asyncio.sleep(0)

            with pytest.raises(RuntimeError, match="awaited something other than its Tx"):
                await store.write(wanders_off)
            async with store.read() as tx:
                assert await tx.bots.get("wanderer-" + bots[0]) is None
    finally:
        await store.close()
