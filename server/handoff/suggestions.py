"""The copilot sidebar hook: the interface the server asks for reply suggestions, and the default.

The server calls :meth:`SuggestionProvider.suggest` on claim, on every customer message while the conversation is
claimed, and after each message of the claiming agent, with the context built from the stored events by
``copilot.data.context.context_from_events`` (the same function offline evaluation relies on). It never waits for the
answer before relaying chat: the call runs in a background task, and an answer for a seq that is no longer the
conversation's latest is dropped.

Providers plug in through ``HANDOFF_SUGGESTION_PROVIDER=module:callable`` (the callable takes the Settings and
returns a provider) or ``create_app(settings, suggestion_provider=...)``. Without either, a configured MLflow
tracking URI (``HANDOFF_MLFLOW_TRACKING_URI`` or ``MLFLOW_TRACKING_URI``) selects ``handoff.champions`` (each bot's
``models:/copilot-<bot_id>@champion``); with none of these, :class:`NoSuggestions` answers and the server sends no
suggestions at all, never made-up ones. A provider may also have ``async start()`` (awaited before the server takes
traffic, e.g. to load models) and ``async close()`` (awaited at shutdown).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from copilot.data.context import Context, Suggestion
from handoff.settings import SettingsError

if TYPE_CHECKING:
    from handoff.settings import Settings


@dataclass(frozen=True)
class ProvidedSuggestions:
    """A provider's answer: the strategy that produced it (logged and sent) and its items, best first."""

    strategy: str
    items: list[Suggestion] = field(default_factory=list)


@runtime_checkable
class SuggestionProvider(Protocol):
    """Anything that can suggest the agent's next reply for a bot's conversation."""

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        """Up to ``k`` suggestions for ``context``, or None when this bot has none to offer.

        It must not block the event loop: run CPU-heavy work in an executor.
        """
        ...


class NoSuggestions:
    """The default provider: no strategy is configured, so there are no suggestions."""

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        return None


def load_provider(spec: str | None, settings: Settings) -> SuggestionProvider:
    """The provider named by ``spec`` (``package.module:callable``), built with ``settings``; if None, the MLflow
    champions when ``settings.mlflow_tracking_uri`` is set, else NoSuggestions.

    Raises:
        SettingsError: when the spec is malformed, cannot be imported, or does not give a SuggestionProvider.
    """
    if spec is None:
        if settings.mlflow_tracking_uri:
            try:  # MLflow and the strategies come with the ``serving`` extra, not with the server alone
                from handoff.champions import make_champion_provider
            except ImportError as exc:
                raise SettingsError(f"serving champions from {settings.mlflow_tracking_uri} needs the serving extra "
                                    f"(pip install 'copilot-handoff[serving]'): {exc}") from exc
            return make_champion_provider(settings)
        return NoSuggestions()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError(f"HANDOFF_SUGGESTION_PROVIDER must look like 'package.module:callable', not {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"HANDOFF_SUGGESTION_PROVIDER {spec!r} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise SettingsError(f"HANDOFF_SUGGESTION_PROVIDER {spec!r} names {type(factory).__name__}, not a callable")
    provider = factory(settings)
    if not isinstance(provider, SuggestionProvider):
        raise SettingsError(f"HANDOFF_SUGGESTION_PROVIDER {spec!r} returned {provider!r}, which has no async suggest()")
    return provider
