"""The ``handoff`` command line: ``handoff serve --host H --port P [--pilot FILE]`` (also ``python -m handoff``).

Settings come from ``HANDOFF_*`` environment variables (handoff.settings); the options here override them.
Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 2 for bad settings or a bad pilot file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.engine import make_url

from handoff.pilot import PilotFileError
from handoff.settings import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff", description="The live handoff server (docs/protocol.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the server (HTTP API and Socket.IO on one port)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--pilot", type=Path, help="pilot TOML file with bots, agents and keys "
                                                  "(default: $HANDOFF_PILOT_FILE)")
    serve.add_argument("--database-url", help="overrides $HANDOFF_DATABASE_URL")
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    migrate.add_argument("--database-url", help="overrides $HANDOFF_DATABASE_URL")
    return parser


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def _serve(settings: Settings, host: str, port: int) -> None:
    from handoff.app import create_app

    # SQLite write batches run in a worker thread; when the event loop is busy, that thread waits for the GIL for
    # up to the switch interval (5 ms by default) at every step. 0.5 ms keeps chat latency well under a commit.
    sys.setswitchinterval(0.0005)

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        actual = runner.addresses[0][1] if runner.addresses else port
        # Everything allocated at start-up (SQLAlchemy metadata, compiled statements, modules) lives as long as
        # the process: keep it out of the garbage collector's full passes, which would otherwise pause chat.
        gc.collect()
        gc.freeze()
        # One line on stdout that tools (tests, replay) read to learn the port when --port 0.
        print(f"handoff: serving on http://{host}:{actual} (database {_safe_url(settings.database_url)})",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("handoff: stopping", flush=True)
    finally:
        await runner.cleanup()


async def _migrate(settings: Settings) -> None:
    from handoff.store import open_store

    store = await open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    await store.close()
    print(f"handoff: schema of {_safe_url(settings.database_url)} is up to date")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    if getattr(args, "pilot", None):
        overrides["pilot_file"] = args.pilot
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin at each start
    try:
        if args.command == "serve":
            asyncio.run(_serve(settings, args.host, args.port))
        else:
            asyncio.run(_migrate(settings))
    except (PilotFileError, SettingsError) as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
