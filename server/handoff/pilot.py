"""The pilot file: a TOML file that declares bots, agents and their keys, applied when the server starts.

For a pilot, an operator writes the credentials once into this file (keep it secret, like any key file) and hands
them to the bot platform and the agents; restarting the server re-applies the file, so the file is the truth for
the bots and agents it names: their names, bots and webhooks are updated, and the key given here becomes their only
key. Bots and agents created through the admin API are left alone. See server/pilot.example.toml.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handoff import payloads
from handoff.errors import HandoffError

MIN_KEY_CHARS = 24


class PilotFileError(ValueError):
    """The pilot file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class PilotBot:
    bot: payloads.BotIn
    api_key: str


@dataclass(frozen=True)
class PilotAgent:
    agent: payloads.AgentIn
    token: str


@dataclass(frozen=True)
class Pilot:
    bots: tuple[PilotBot, ...]
    agents: tuple[PilotAgent, ...]


def _secret(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry.pop(name, None)
    if not isinstance(value, str) or len(value) < MIN_KEY_CHARS:
        raise PilotFileError(f"{where}: '{name}' must be a string of at least {MIN_KEY_CHARS} characters "
                             f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return value


def load_pilot(path: Path) -> Pilot:
    """Parse and validate a pilot file. Raises PilotFileError naming the file and entry at fault."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PilotFileError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - {"bots", "agents"})
    if unknown:
        raise PilotFileError(f"{path}: unknown section(s) {', '.join(unknown)}; use [[bots]] and [[agents]]")
    bots: list[PilotBot] = []
    agents: list[PilotAgent] = []
    keys: set[str] = set()
    try:
        for i, entry in enumerate(data.get("bots", [])):
            where = f"{path}: bots[{i}]"
            entry = dict(entry)
            key = _secret(entry, "api_key", where)
            bots.append(PilotBot(payloads.bot(entry), key))
            keys.add(key)
        for i, entry in enumerate(data.get("agents", [])):
            where = f"{path}: agents[{i}]"
            entry = dict(entry)
            token = _secret(entry, "token", where)
            agents.append(PilotAgent(payloads.agent(entry), token))
            keys.add(token)
    except HandoffError as exc:
        raise PilotFileError(f"{where}: {exc.message}") from None
    if len(keys) != len(bots) + len(agents):
        raise PilotFileError(f"{path}: every bot and agent needs its own key")
    declared = {b.bot.bot_id for b in bots}
    if len(declared) != len(bots) or len({a.agent.agent_id for a in agents}) != len(agents):
        raise PilotFileError(f"{path}: a bot or agent id appears twice")
    return Pilot(tuple(bots), tuple(agents))
