"""The suggestion provider backed by MLflow champions: ``models:/copilot-<bot_id>@champion``.

Used by default when ``HANDOFF_MLFLOW_TRACKING_URI`` (or ``MLFLOW_TRACKING_URI``) is set and no
``HANDOFF_SUGGESTION_PROVIDER`` is. The work (registry, loading, prediction off the event loop, alias refresh every
``HANDOFF_CHAMPION_REFRESH_S``) is :class:`copilot.serving.champions.ChampionSuggester`; this adapter gives it the
server's provider interface and lifecycle (warm at start, close at shutdown).
"""

from __future__ import annotations

from copilot.data.context import Context
from copilot.serving.champions import ChampionSuggester
from copilot.strategies.embeddings import EmbeddingCache
from handoff.settings import Settings, SettingsError
from handoff.suggestions import ProvidedSuggestions


class ChampionProvider:
    """A :class:`handoff.suggestions.SuggestionProvider` answering with each bot's champion; None for a bot
    without one (the server then sends no suggestions)."""

    def __init__(self, suggester: ChampionSuggester) -> None:
        self.suggester = suggester

    async def start(self) -> None:
        """Load every registered champion before the server takes traffic."""
        await self.suggester.warm()

    async def close(self) -> None:
        self.suggester.close()

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        answer = await self.suggester.suggest(bot_id, context, k)
        return None if answer is None else ProvidedSuggestions(answer.strategy, answer.items)


def make_champion_provider(settings: Settings) -> ChampionProvider:
    """For ``HANDOFF_SUGGESTION_PROVIDER=handoff.champions:make_champion_provider`` (the default with a URI)."""
    if not settings.mlflow_tracking_uri:
        raise SettingsError("HANDOFF_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI) is needed to serve champions")
    cache = EmbeddingCache(settings.embedding_cache_dir) if settings.embedding_cache_dir else None
    return ChampionProvider(ChampionSuggester(settings.mlflow_tracking_uri, refresh_s=settings.champion_refresh_s,
                                              embedding_cache=cache))
