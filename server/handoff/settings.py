"""Server settings: one frozen object built from the environment (prefix ``HANDOFF_``), passed down explicitly.

Nothing here reads the environment at import time; :meth:`Settings.from_env` does, when ``handoff serve`` starts.
Each variable is parsed by its field's declared type (``int``, ``float``, ``str``, ``Path``, ``X | None``, a
comma-separated ``tuple[str, ...]``) or by the :class:`EnvParser` in its ``Annotated`` type (``SecondsOrOff``).
A value that cannot be parsed raises :class:`SettingsError` naming the variable and what it expected.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, TypeAlias, get_args, get_origin, get_type_hints

PREFIX = "HANDOFF_"
MAX_LADDER_S = 7 * 24 * 3600.0


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names the variable."""


@dataclass(frozen=True)
class EnvParser:
    """How one setting is read from its variable: ``parse`` turns the text into the value (raising ValueError),
    ``expected`` says what a good value looks like in the error message."""

    parse: Callable[[str], Any]
    expected: str


def _seconds_or_off(raw: str) -> float | None:
    """A number of seconds, or ``off``/``none`` for a rung that never fires."""
    if raw.lower() in ("off", "none"):
        return None
    return float(raw)


def _comma_separated(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


SecondsOrOff: TypeAlias = Annotated[float | None, EnvParser(_seconds_or_off, "seconds or off")]

# A field of one of these types (or one of them | None) is parsed by its type; any other type needs an
# Annotated[..., EnvParser(...)] like SecondsOrOff.
_BY_TYPE: dict[Any, EnvParser] = {
    str: EnvParser(str, "str"),
    int: EnvParser(int, "int"),
    float: EnvParser(float, "float"),
    Path: EnvParser(Path, "Path"),
    tuple[str, ...]: EnvParser(_comma_separated, "comma-separated list"),
}


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told.

    Attributes:
        database_url: SQLAlchemy URL. ``sqlite:///handoff.db`` (a file in the working directory, which the SQLite
            store drives through pysqlite) by default; ``postgresql+asyncpg://user@host/db`` for several processes.
        admin_key: the admin credential for ``POST /bots`` and ``POST /agents``; None disables those endpoints.
        pilot_file: a TOML file declaring bots, agents and their keys, applied at start-up
            (``server/pilot.example.toml``).
        redis_url: when set, Socket.IO broadcasts go through Redis so several processes serve one deployment.
        redis_channel: the Redis channel of the Socket.IO message queue (distinct per deployment).
        typing_timeout_s: a typing indicator without a ``stop`` expires after this long.
        typing_throttle_s: a repeated ``start`` is forwarded at most this often.
        rate_limit_per_s, rate_limit_burst: per-connection token bucket for customers and agents.
        bot_rate_limit_per_s, bot_rate_limit_burst: the same for bot connections, which carry many conversations.
        http_rate_limit_per_s, http_rate_limit_burst: per-credential token bucket for the HTTP API.
        max_body_bytes: largest HTTP request body accepted (413 beyond).
        suggestions_k: how many suggestions to ask the provider for.
        suggestion_timeout_s: a provider slower than this is abandoned for that request.
        suggestion_provider: ``module:callable`` taking these settings and returning a SuggestionProvider;
            None means the champions of ``mlflow_tracking_uri`` when that is set, else no suggestions (never fake
            ones).
        mlflow_tracking_uri: the MLflow registry whose ``models:/copilot-<bot_id>@champion`` serve suggestions
            (``HANDOFF_MLFLOW_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``); None: no champions.
        champion_refresh_s: a bot's ``champion`` alias is read again at most this often, so a moved alias is
            served without a restart.
        embedding_cache_dir: the workbench's on-disk MiniLM cache (``copilot.strategies.embeddings``) for champions
            that embed text; None embeds in memory. Sharing the workbench's cache makes the server embed a text
            exactly as the offline evaluation did (a vector computed alone and in a batch can differ in the last
            bits).
        webhook_timeout_s, webhook_max_attempts, webhook_backoff_s, webhook_backoff_max_s, webhook_poll_s:
            hand-back webhook delivery (see handoff.webhooks).
        webhook_secret: when set, each webhook carries ``X-Handoff-Signature: sha256=<HMAC of the body>``.
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (FULL survives power loss; NORMAL survives a killed
            process and is faster).
        push_ttl_s: how long a push service keeps an undelivered notification (Web Push ``TTL``, FCM ``ttl``, APNs
            ``apns-expiration``): an escalation is stale after a minute or two, and the ladder notifies again.
        push_urgency: Web Push ``Urgency`` (RFC 8030); ``high`` wakes a sleeping phone.
        push_timeout_s: one push request is abandoned after this long (and retried).
        push_max_attempts, push_backoff_s, push_backoff_max_s: retries of a push answered 429 or 5xx (or not at
            all): doubling from push_backoff_s (or the service's ``Retry-After``), capped, never past the TTL.
        push_parallel: pushes in flight at once per fan-out.
        vapid_private_key: the Web Push (VAPID, RFC 8292) private key: PEM text, or the raw 32-byte P-256 scalar
            in base64url. Without it (and without vapid_key_file) a key is generated on first start and stored in
            the database, so every process of a deployment signs with the same key across restarts.
        vapid_key_file: a PEM file holding the VAPID private key; generated there (mode 0600) when absent.
        vapid_subject: the VAPID ``sub`` claim, the operator's contact (``mailto:`` or ``https:``). Push services
            use it to reach the operator; some (Apple's) refuse pushes without a real one.
        fcm_service_account_file: a Firebase service-account JSON (project_id, client_email, private_key,
            token_uri); without it, FCM devices are recorded as ``skipped``.
        fcm_endpoint: FCM's base URL (``{fcm_endpoint}/v1/projects/{project}/messages:send``).
        apns_key_file, apns_key_id, apns_team_id, apns_topic: APNs token authentication (the .p8 key, its key id,
            the team id) and the app's bundle id; all four or APNs devices are recorded as ``skipped``.
        apns_endpoint: APNs' base URL (``https://api.sandbox.push.apple.com`` for development builds).
        ladder_renotify_after_s, ladder_wait_notice_after_s, ladder_fallback_after_s: the unclaimed-escalation
            ladder's default rungs in seconds after the escalation (a bot's own ``ladder`` overrides them; ``off``
            disables a rung): notify the agents again, tell the customer the expected wait, call the fallback webhook.
        ladder_poll_s: how often the ladder looks for due rungs written by other processes.
        expected_wait_samples: how many of the bot's latest times to claim the expected wait is estimated from.
        metrics_token: when set, ``GET /metrics`` needs ``Authorization: Bearer <metrics_token>``.
        cors_origins: origins allowed to open Socket.IO connections from a browser on another origin.
        log_level: logging level name for ``handoff serve``.
    """

    database_url: str = "sqlite:///handoff.db"
    admin_key: str | None = None
    pilot_file: Path | None = None
    redis_url: str | None = None
    redis_channel: str = "handoff"
    typing_timeout_s: float = 5.0
    typing_throttle_s: float = 1.0
    rate_limit_per_s: float = 30.0
    rate_limit_burst: int = 60
    bot_rate_limit_per_s: float = 1000.0
    bot_rate_limit_burst: int = 2000
    http_rate_limit_per_s: float = 200.0
    http_rate_limit_burst: int = 1000
    max_body_bytes: int = 4_000_000
    suggestions_k: int = 3
    suggestion_timeout_s: float = 10.0
    suggestion_provider: str | None = None
    mlflow_tracking_uri: str | None = None
    champion_refresh_s: float = 30.0
    embedding_cache_dir: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 10
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_poll_s: float = 2.0
    webhook_secret: str | None = None
    sqlite_synchronous: str = "FULL"
    push_ttl_s: int = 120
    push_urgency: str = "high"
    push_timeout_s: float = 10.0
    push_max_attempts: int = 4
    push_backoff_s: float = 1.0
    push_backoff_max_s: float = 30.0
    push_parallel: int = 64
    vapid_private_key: str | None = None
    vapid_key_file: Path | None = None
    vapid_subject: str = "mailto:handoff@localhost"
    fcm_service_account_file: Path | None = None
    fcm_endpoint: str = "https://fcm.googleapis.com"
    apns_key_file: Path | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_endpoint: str = "https://api.push.apple.com"
    ladder_renotify_after_s: SecondsOrOff = 120.0
    ladder_wait_notice_after_s: SecondsOrOff = 60.0
    ladder_fallback_after_s: SecondsOrOff = 300.0
    ladder_poll_s: float = 1.0
    expected_wait_samples: int = 50
    metrics_token: str | None = None
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        positive = ("typing_timeout_s", "typing_throttle_s", "rate_limit_per_s", "bot_rate_limit_per_s",
                    "http_rate_limit_per_s", "suggestion_timeout_s", "champion_refresh_s", "webhook_timeout_s",
                    "webhook_backoff_s", "webhook_backoff_max_s", "webhook_poll_s", "push_timeout_s", "push_backoff_s",
                    "push_backoff_max_s", "ladder_poll_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be > 0, not {getattr(self, name)!r}")
        for name in ("rate_limit_burst", "bot_rate_limit_burst", "http_rate_limit_burst", "max_body_bytes",
                     "suggestions_k", "webhook_max_attempts", "push_ttl_s", "push_max_attempts", "push_parallel",
                     "expected_wait_samples"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1, not {getattr(self, name)!r}")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise SettingsError(f"{PREFIX}SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, "
                                f"not {self.sqlite_synchronous!r}")
        if self.push_urgency not in ("very-low", "low", "normal", "high"):
            raise SettingsError(f"{PREFIX}PUSH_URGENCY must be very-low, low, normal or high, "
                                f"not {self.push_urgency!r}")
        if not self.vapid_subject.startswith(("mailto:", "https:")):
            raise SettingsError(f"{PREFIX}VAPID_SUBJECT must be a mailto: or https: URI (RFC 8292), "
                                f"not {self.vapid_subject!r}")
        for name in ("ladder_renotify_after_s", "ladder_wait_notice_after_s", "ladder_fallback_after_s"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LADDER_S:
                raise SettingsError(f"{PREFIX}{name.upper()} must be between 0 and {MAX_LADDER_S:.0f} s or off, "
                                    f"not {value!r}")
        apns = (self.apns_key_file, self.apns_key_id, self.apns_team_id, self.apns_topic)
        if any(v is not None for v in apns) and not all(v is not None for v in apns):
            raise SettingsError(f"{PREFIX}APNS_KEY_FILE, {PREFIX}APNS_KEY_ID, {PREFIX}APNS_TEAM_ID and "
                                f"{PREFIX}APNS_TOPIC go together: set all four or none")
        if not self.database_url.strip():
            raise SettingsError(f"{PREFIX}DATABASE_URL must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``HANDOFF_<FIELD>`` variables (e.g. ``HANDOFF_DATABASE_URL``), then ``overrides``.

        ``mlflow_tracking_uri`` falls back to MLflow's own ``MLFLOW_TRACKING_URI``.

        Empty variables count as unset. Raises SettingsError naming the variable whose value is unusable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parser in _env_parsers(cls).items():
            key = f"{PREFIX}{name.upper()}"
            raw = env.get(key)
            if raw is None or raw.strip() == "":
                continue
            values[name] = _parse(key, raw.strip(), parser)
        if "mlflow_tracking_uri" not in values and (env.get("MLFLOW_TRACKING_URI") or "").strip():
            values["mlflow_tracking_uri"] = env["MLFLOW_TRACKING_URI"].strip()
        values.update(overrides)
        return replace(cls(), **values)


def _parser_for(name: str, hint: Any) -> EnvParser:
    """The parser of a field with type ``hint``: its ``Annotated`` EnvParser, else the parser of its type (the
    non-None type of an optional). A type with neither is a TypeError naming the field, so a new field cannot be
    left unreadable from the environment."""
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        for extra in extras:
            if isinstance(extra, EnvParser):
                return extra
    if isinstance(hint, types.UnionType):
        present = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(present) == 1:
            hint = present[0]
    try:
        return _BY_TYPE[hint]
    except KeyError:
        supported = ", ".join(t.__name__ if get_origin(t) is None else str(t) for t in _BY_TYPE)
        raise TypeError(f"Settings.{name}: no environment parser for {hint!r}; declare it as one of {supported} "
                        f"(or one of them | None), or as Annotated[..., EnvParser(...)]") from None


def _env_parsers(cls: type[Settings]) -> dict[str, EnvParser]:
    """Each field's parser, from the class's type hints (read when the settings are, not at import)."""
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: _parser_for(f.name, hints[f.name]) for f in fields(cls)}


def _parse(key: str, raw: str, parser: EnvParser) -> Any:
    try:
        return parser.parse(raw)
    except ValueError:
        raise SettingsError(f"{key}: cannot use {raw!r} ({parser.expected} expected)") from None
