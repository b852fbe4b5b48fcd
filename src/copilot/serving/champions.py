"""Serving each chatbot's champion to the server's suggestions: ``models:/copilot-<chatbot>@champion`` from an
MLflow registry.

:class:`ChampionSuggester` answers suggestions for any chatbot from the model version its ``champion`` alias points
at. It never blocks the event loop that calls it: registry queries and model loading run in one worker thread,
predictions in another (with ``torch.set_num_threads(1)`` there, so a dense model never fights the server for the
machine's cores); requests that queue up meanwhile are answered together, one ``suggest_many`` batch per model. It
resolves a chatbot's alias at most once every ``refresh_s`` seconds (one registry query per
chatbot and refresh, however many messages arrive), so moving the alias to another version takes effect without a
restart, and keeps loaded models per chatbot and version. A chatbot without a champion gets None (logged once).

The server wraps it as a ``SuggestionProvider`` (``handoff.champions``); this module never imports the server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlflow import MlflowClient

from copilot.data.context import Context, ContextTurn, Suggestion
from copilot.serving.export import (
    CHAMPION_ALIAS,
    MODEL_PREFIX,
    StrategyModel,
    load_model_version,
    model_name,
    predict_suggestions,
    resolve_alias,
)
from copilot.strategies.base import Strategy
from copilot.strategies.embeddings import EmbeddingCache

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ChampionAnswer:
    """Suggestions and the name of what made them: ``<strategy describe()>@v<version>``."""

    strategy: str
    items: list[Suggestion] = field(default_factory=list)


@dataclass
class _Loaded:
    version: int
    model: Any
    strategy: str
    fitted: Strategy | None = None  # the pickled strategy inside a copilot StrategyModel


@dataclass
class _Alias:
    version: int | None
    checked: float


_thread_state = threading.local()
_Request = tuple[_Loaded, Context, int, "asyncio.Future[list[Suggestion]]"]


def _resolve(future: asyncio.Future[list[Suggestion]], items: list[Suggestion]) -> None:
    if not future.done():  # the server may have given up waiting (its suggestion timeout)
        future.set_result(items)


def _fail(future: asyncio.Future[list[Suggestion]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _one_thread_torch() -> None:
    # Only when a model brought torch in: a lexical champion never pays for importing it.
    if not getattr(_thread_state, "torch_set", False) and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
        _thread_state.torch_set = True


class ChampionSuggester:
    """Suggestions from each chatbot's registered champion, loaded lazily, cached per version, refreshed.

    Args:
        tracking_uri: the MLflow tracking and registry store.
        refresh_s: how long a resolved alias (or its absence) is trusted before the registry is asked again.
        alias: the alias to serve (``champion``).
        embedding_cache: where champions that embed text find and keep their sentence vectors (the workbench's
            cache: served and offline scores then agree exactly); None keeps them in memory.
    """

    def __init__(self, tracking_uri: str, *, refresh_s: float = 30.0, alias: str = CHAMPION_ALIAS,
                 embedding_cache: EmbeddingCache | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.refresh_s = refresh_s
        self.alias = alias
        self.embedding_cache = embedding_cache
        self._client: Any = None
        self._registry = ThreadPoolExecutor(1, thread_name_prefix="champion-registry")
        self._predict = ThreadPoolExecutor(1, thread_name_prefix="champion-predict")
        self._aliases: dict[str, _Alias] = {}
        self._models: dict[tuple[str, int], _Loaded] = {}
        self._by_source: dict[str, Any] = {}  # model versions sharing one artifact share one loaded model
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._queue_lock = threading.Lock()
        self._queue: list[_Request] = []
        self._draining = False
        self._said_none: set[str] = set()
        self.registry_queries = 0

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    async def _once(self, key: Any, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        """Run ``fn`` in ``executor``; concurrent callers with the same key share one run."""
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(executor, fn))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        result: T = await asyncio.shield(pending)
        return result

    # -- alias and models ------------------------------------------------------------------------------------------

    def _query_alias(self, chatbot: str) -> int | None:
        self.registry_queries += 1
        return resolve_alias(self._mlflow(), chatbot, self.alias)

    async def version(self, chatbot: str) -> int | None:
        """The version the alias points at, asking the registry at most once per ``refresh_s``."""
        known = self._aliases.get(chatbot)
        now = time.monotonic()
        if known is not None and now - known.checked < self.refresh_s:
            return known.version
        try:
            version = await self._once(("alias", chatbot), self._registry, lambda: self._query_alias(chatbot))
        except Exception:
            log.exception("cannot read the %s alias of %s; keeping what was known", self.alias, model_name(chatbot))
            if known is None:
                return None
            version = known.version
        self._aliases[chatbot] = _Alias(version, time.monotonic())
        if version is None:
            if chatbot not in self._said_none:
                self._said_none.add(chatbot)
                log.info("chatbot %s has no %s (%s): no suggestions", chatbot, self.alias, model_name(chatbot))
        else:
            if known is not None and known.version not in (None, version):
                log.info("chatbot %s: %s moved from v%s to v%s", chatbot, self.alias, known.version, version)
            self._said_none.discard(chatbot)
        return version

    def _load(self, chatbot: str, version: int) -> _Loaded:
        source = str(self._mlflow().get_model_version(model_name(chatbot), str(version)).source)
        model = self._by_source.get(source)
        if model is None:
            model = load_model_version(self._mlflow(), self.tracking_uri, model_name(chatbot), version)
            self._by_source[source] = model
        python_model = model.unwrap_python_model()
        fitted = python_model.strategy if isinstance(python_model, StrategyModel) else None
        if fitted is not None:
            fitted.use_embedding_cache(self.embedding_cache)
        strategy = fitted.describe() if fitted is not None else model_name(chatbot)
        log.info("loaded %s v%d: %s", model_name(chatbot), version, strategy)
        return _Loaded(version, model, f"{strategy}@v{version}", fitted)

    async def model(self, chatbot: str) -> _Loaded | None:
        """The loaded champion of ``chatbot`` (loading it on first use of a version), or None."""
        version = await self.version(chatbot)
        if version is None:
            return None
        key = (chatbot, version)
        loaded = self._models.get(key)
        if loaded is None:
            loaded = await self._once(("model", *key), self._registry, lambda: self._load(chatbot, version))
            self._models[key] = loaded
            # Older versions of this chatbot are no longer served.
            for old in [k for k in self._models if k[0] == chatbot and k[1] != version]:
                del self._models[old]
        return loaded

    async def warm(self) -> list[str]:
        """Load the champion of every registered ``copilot-*`` model now (at server start), not on first use."""
        def chatbots() -> list[str]:
            self.registry_queries += 1
            found = self._mlflow().search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'")
            return [m.name[len(MODEL_PREFIX):] for m in found]

        names = await asyncio.get_running_loop().run_in_executor(self._registry, chatbots)
        ready = []
        for chatbot in names:
            try:
                if await self.model(chatbot) is not None:
                    # One prediction now: whatever a model loads lazily (a sentence encoder) loads before the
                    # server takes traffic, not during the first customer's message.
                    await self.suggest(chatbot, Context(chatbot, (ContextTurn("customer", "hello"),)), 1)
                    ready.append(chatbot)
            except Exception:
                log.exception("cannot load the champion of %s", chatbot)
        log.info("champions ready for %d chatbots", len(ready))
        return ready

    # -- answering -------------------------------------------------------------------------------------------------

    async def suggest(self, chatbot: str, context: Context, k: int) -> ChampionAnswer | None:
        """Up to ``k`` suggestions from the chatbot's champion, or None when it has none."""
        loaded = await self.model(chatbot)
        if loaded is None:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Suggestion]] = loop.create_future()
        with self._queue_lock:
            self._queue.append((loaded, context, k, future))
            start, self._draining = not self._draining, True
        if start:
            try:
                loop.run_in_executor(self._predict, self._drain, loop)
            except RuntimeError:  # closed
                with self._queue_lock:
                    self._draining = False
                raise
        items = await future
        return ChampionAnswer(loaded.strategy, items)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the prediction thread: answer every queued request, those of one model and k in one batch
        (``suggest_many``: one forward pass of a sentence encoder for all of them), until the queue is empty."""
        _one_thread_torch()
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            groups: dict[tuple[int, int], list[_Request]] = {}
            for request in batch:
                groups.setdefault((id(request[0]), request[2]), []).append(request)
            for requests in groups.values():
                loaded, k = requests[0][0], requests[0][2]
                contexts = [r[1] for r in requests]
                try:
                    if loaded.fitted is not None:
                        # The pyfunc model's own predict, minus the JSON and DataFrame round trip and MLflow's
                        # per-call schema check (about 2 ms a call, more than a lexical strategy's whole answer):
                        # same suggestions, as tests/test_replay.py's round trip checks.
                        results = loaded.fitted.suggest_many(contexts, k)
                    else:
                        results = [predict_suggestions(loaded.model, c, k) for c in contexts]
                except Exception as exc:
                    for r in requests:
                        loop.call_soon_threadsafe(_fail, r[3], exc)
                    continue
                for r, items in zip(requests, results, strict=True):
                    loop.call_soon_threadsafe(_resolve, r[3], items)

    def close(self) -> None:
        """Stop the worker threads (a running prediction finishes; queued ones are dropped)."""
        self._registry.shutdown(wait=False, cancel_futures=True)
        self._predict.shutdown(wait=False, cancel_futures=True)
