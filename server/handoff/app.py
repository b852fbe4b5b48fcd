"""The application factory: ``create_app(settings) -> web.Application``. No module-level app or socket server.

Start-up (an ``app.cleanup_ctx`` generator) opens and migrates the database, applies the pilot file, loads the
push credentials (the VAPID key is generated on first start), builds the services, registers the Socket.IO namespace
and the HTTP routes' backing objects, and starts the background loops (webhook delivery, the unclaimed-escalation
ladder, typing expiry). Shut-down runs the same generator backwards. State lives under typed
``web.AppKey``s so tests and tools can reach the running parts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as aiohttp_driver

from copilot.live.protocol import MAX_FRAME_BYTES
from handoff.background import running
from handoff.clock import Clock, SystemClock
from handoff.delivery import Delivery
from handoff.http import HttpApi, json_errors
from handoff.ladder import LadderConfig, LadderRunner
from handoff.metrics import HandoffMetrics
from handoff.namespace import HandoffNamespace
from handoff.notify import CompositeNotifier, InAppNotifier, Notifier
from handoff.pages import page_routes, static_headers
from handoff.pilot import load_pilot
from handoff.push import PushNotifier, build_push
from handoff.services import Services, build_services
from handoff.settings import Settings
from handoff.store import Store, open_store
from handoff.suggestions import SuggestionProvider, load_provider
from handoff.typing import TypingTracker
from handoff.webhooks import WebhookDeliverer

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """The running server's parts, available once the app has started."""

    store: Store
    services: Services
    delivery: Delivery
    namespace: HandoffNamespace
    webhooks: WebhookDeliverer
    http: HttpApi
    push: PushNotifier
    ladder: LadderRunner
    metrics: HandoffMetrics


SETTINGS = web.AppKey("settings", Settings)
SIO = web.AppKey("sio", socketio.AsyncServer)
PARTS = web.AppKey("parts", Parts)


class _ExactBody:
    """The body of a long-polling POST, read in full.

    engine.io reads the body with one ``read(content_length)``; aiohttp's ``StreamReader.read(n)`` returns *up to*
    n bytes (aiohttp issue #3926), so frames over about 64 KB arrived cut and the client was dropped.
    ``readexactly`` waits for all of them, which the protocol's 1 MB frames need.
    """

    def __init__(self, request: web.Request) -> None:
        self._stream = request.content

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            return await self._stream.read()
        return await self._stream.readexactly(n)


def _translate_request(request: web.Request) -> dict[str, Any]:
    environ: dict[str, Any] = aiohttp_driver.translate_request(request)
    environ["wsgi.input"] = _ExactBody(request)
    return environ


def _client_manager(settings: Settings) -> socketio.AsyncManager | None:
    if settings.redis_url is None:
        return None
    # Several processes: every emit goes through Redis to the process holding the socket.
    return socketio.AsyncRedisManager(settings.redis_url, channel=settings.redis_channel)


def create_app(settings: Settings, *, suggestion_provider: SuggestionProvider | None = None,
               notifier: Notifier | None = None, clock: Clock | None = None) -> web.Application:
    """The handoff server as an aiohttp application (HTTP API under /api/v1, Socket.IO at /socket.io/, the agent
    console at /console/ and the customer widget at /widget/).

    Args:
        settings: everything configurable (handoff.settings).
        suggestion_provider: the copilot's provider; default: the one named by settings.suggestion_provider,
            else none (no suggestions are ever sent).
        notifier: how agents hear of escalations and reminders; default: the in-app ``escalation`` event, then
            push to every registered device (handoff.push).
        clock: the time the ladder, webhooks, typing and the handoff timings run on; default: the real clock.
    """
    clock = clock if clock is not None else SystemClock()
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=_client_manager(settings),
        # At least 1 MB frames, so an oversized message gets a too_large ack instead of a dropped connection.
        max_http_buffer_size=MAX_FRAME_BYTES,
        # One event at a time per connection: a client's messages are stored in the order it sent them.
        async_handlers=False,
        cors_allowed_origins=list(settings.cors_origins) or None,
        logger=False,
        engineio_logger=False,
    )
    sio.eio._async = {**sio.eio._async, "translate_request": _translate_request}
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors(settings.max_body_bytes)])
    app[SETTINGS] = settings
    app[SIO] = sio
    sio.attach(app)
    http = HttpApi(settings)
    app.add_routes(http.routes())
    # The agent console (/console/) and the customer widget (/widget/): static files, clients like any other.
    app.add_routes(page_routes())
    app.on_response_prepare.append(static_headers)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        push: PushNotifier | None = None
        try:
            metrics = HandoffMetrics()
            webhooks = WebhookDeliverer(store, settings, clock)
            provider = suggestion_provider or load_provider(settings.suggestion_provider, settings)
            provider_start = getattr(provider, "start", None)
            if provider_start is not None:
                await provider_start()
            push, vapid_public_key = await build_push(settings, store, metrics)
            in_app = InAppNotifier(lambda event, payload, bot_id: delivery.emit_to_bot_agents(event, payload, bot_id))
            services = build_services(
                store,
                # In-app first: the escalation event leaves before the push fan-out even starts.
                notifier=CompositeNotifier([in_app, push]) if notifier is None else notifier,
                provider=provider,
                clock=clock,
                suggestions_k=settings.suggestions_k,
                suggestion_timeout_s=settings.suggestion_timeout_s,
                typing=TypingTracker(settings.typing_timeout_s, settings.typing_throttle_s),
                metrics=metrics,
                ladder=LadderConfig.defaults(settings),
                expected_wait_samples=settings.expected_wait_samples,
            )
            runner = LadderRunner(store, lambda row: delivery.run_optional(
                row.conversation_id, lambda: services.ladder.step(row)), settings.ladder_poll_s, clock)
            delivery = Delivery(sio, services.sidebar, on_webhook=webhooks.wake, on_ladder=runner.wake)
            if settings.pilot_file is not None:
                await _apply_pilot(services, settings)
            namespace = HandoffNamespace(store=store, services=services, delivery=delivery, settings=settings,
                                         metrics=metrics)
            sio.register_namespace(namespace)
            http.bind(store, services, delivery, vapid_public_key=vapid_public_key, metrics=metrics)
            app[PARTS] = Parts(store, services, delivery, namespace, webhooks, http, push, runner, metrics)
            async for _ in running(webhooks.run):
                async for _ in running(runner.run):
                    async for _ in running(lambda: _expire_typing(services, delivery, settings, clock)):
                        yield
            log.debug("stopping: background loops")
            await sio.shutdown()
            await delivery.close()
            provider_close = getattr(provider, "close", None)
            if provider_close is not None:
                await provider_close()
        finally:
            if push is not None:
                await push.close()
            log.debug("stopping: database")
            await store.close()
            log.debug("stopped")

    async def close_connections(app: web.Application) -> None:
        # Before aiohttp waits for in-flight requests: close every Engine.IO socket, which also answers pending
        # long-polling GETs (they would otherwise hold the shutdown for ping_interval + ping_timeout).
        sockets = list(sio.eio.sockets.values())
        log.debug("stopping: closing %d connections", len(sockets))
        for socket in sockets:
            # wait=False: a socket whose peer is already gone never drains its queue, and must not hold us.
            with contextlib.suppress(Exception):
                await socket.close(wait=False, reason=sio.eio.reason.SERVER_DISCONNECT)

    app.on_shutdown.append(close_connections)
    app.cleanup_ctx.append(lifecycle)
    return app


async def _apply_pilot(services: Services, settings: Settings) -> None:
    assert settings.pilot_file is not None
    pilot = load_pilot(settings.pilot_file)
    for bot in pilot.bots:
        await services.directory.upsert_bot(bot.bot, bot.api_key)
    for agent in pilot.agents:
        await services.directory.upsert_agent(agent.agent, agent.token)
    log.info("pilot file %s: %d bots, %d agents", settings.pilot_file, len(pilot.bots), len(pilot.agents))


async def _expire_typing(services: Services, delivery: Delivery, settings: Settings, clock: Clock) -> None:
    """Send ``stop`` for typing indicators whose sender went quiet (checked several times per timeout)."""
    period = min(0.5, settings.typing_timeout_s / 4)
    while True:
        await clock.sleep(period)
        try:
            for broadcast in services.typing.expired():
                await delivery.emit(broadcast)
        except Exception:
            log.exception("typing expiry failed")
