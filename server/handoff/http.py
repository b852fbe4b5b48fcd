"""The HTTP API of docs/protocol.md (prefix /api/v1), with JSON errors ``{"error": {"code", "message"}}``.

Handlers are thin like the Socket.IO ones: authenticate, validate (handoff.payloads), call a service, answer.
Operations that change a conversation (escalate) go through the same Delivery as Socket.IO events, so their
broadcasts are ordered with everything else on that conversation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from copilot.live.protocol import (
    API_PREFIX,
    ERR_FORBIDDEN,
    ERR_INTERNAL,
    ERR_INVALID_PAYLOAD,
    ERR_NOT_FOUND,
    ERR_RATE_LIMITED,
    ERR_TOO_LARGE,
    ERR_UNAUTHORIZED,
    ROLE_ADMIN,
    VAPID_PUBLIC_KEY_PATH,
)
from handoff import payloads
from handoff.auth import ADMIN, Principal, hash_token, is_admin_key, principal_for
from handoff.delivery import Delivery
from handoff.errors import HandoffError
from handoff.metrics import CONTENT_TYPE, HandoffMetrics
from handoff.ratelimit import KeyedBuckets
from handoff.services import Services
from handoff.settings import Settings
from handoff.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: HandoffError) -> web.Response:
    return web.json_response({"error": error.as_error()}, status=error.http_status)


_STATUS_CODES = {400: ERR_INVALID_PAYLOAD, 401: ERR_UNAUTHORIZED, 403: ERR_FORBIDDEN, 413: ERR_TOO_LARGE,
                 429: ERR_RATE_LIMITED}


def json_errors(max_body_bytes: int) -> Any:
    """A middleware: every error under /api/ answers in the protocol's JSON shape; other paths are left alone."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            return await handler(request)
        except HandoffError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(HandoffError(
                ERR_TOO_LARGE, f"the request body is larger than {max_body_bytes} bytes", limit=max_body_bytes))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, ERR_NOT_FOUND)
            message = "no such endpoint" if exc.status in (404, 405) else exc.reason
            return error_response(HandoffError(code, f"{request.method} {request.path}: {message}"))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(HandoffError(ERR_INTERNAL, "the server failed to handle this request; retry"))

    return middleware


class HttpApi:
    """The routes of the HTTP API. Routes exist from ``create_app``; the services behind them from start-up
    (:meth:`bind`), before the server accepts its first request."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.buckets = KeyedBuckets(settings.http_rate_limit_per_s, settings.http_rate_limit_burst)
        self._store: Store | None = None
        self._services: Services | None = None
        self._delivery: Delivery | None = None
        self._metrics: HandoffMetrics | None = None
        self.vapid_public_key = ""

    def bind(self, store: Store, services: Services, delivery: Delivery, *, vapid_public_key: str = "",
             metrics: HandoffMetrics | None = None) -> None:
        self._store, self._services, self._delivery = store, services, delivery
        self.vapid_public_key = vapid_public_key
        self._metrics = metrics

    @property
    def store(self) -> Store:
        assert self._store is not None, "HttpApi.bind() runs at start-up"
        return self._store

    @property
    def services(self) -> Services:
        assert self._services is not None, "HttpApi.bind() runs at start-up"
        return self._services

    @property
    def delivery(self) -> Delivery:
        assert self._delivery is not None, "HttpApi.bind() runs at start-up"
        return self._delivery

    def routes(self) -> list[web.RouteDef]:
        api = API_PREFIX
        return [
            web.get(f"{api}/healthz", self.healthz),
            web.post(f"{api}/bots", self.create_bot),
            web.post(f"{api}/agents", self.create_agent),
            web.get(f"{api}/agents/me", self.me),
            web.post(f"{api}/agents/me/devices", self.register_device),
            web.get(f"{api}/agents/me/devices", self.devices),
            web.delete(f"{api}/agents/me/devices/{{device_id}}", self.remove_device),
            web.get(f"{api}{VAPID_PUBLIC_KEY_PATH}", self.vapid_key),
            web.get(f"{api}/bots/{{bot_id}}/ladder", self.get_ladder),
            web.put(f"{api}/bots/{{bot_id}}/ladder", self.put_ladder),
            web.get("/metrics", self.metrics),
            web.post(f"{api}/bots/{{bot_id}}/conversations", self.create_conversation),
            web.get(f"{api}/conversations", self.queue),
            web.post(f"{api}/conversations/{{conversation_id}}/escalate", self.escalate),
            web.get(f"{api}/conversations/{{conversation_id}}/events", self.events),
            web.get(f"{api}/conversations/{{conversation_id}}/suggestions", self.suggestions),
            web.post(f"{api}/conversations/{{conversation_id}}/tool-events", self.tool_event),
        ]

    # -- helpers --------------------------------------------------------------------------------------------
    async def _who(self, request: web.Request, *roles: str) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HandoffError(ERR_UNAUTHORIZED, "send 'Authorization: Bearer <credential>'")
        token = token.strip()
        if not payloads.is_unicode(token):  # bytes that are not UTF-8 (aiohttp keeps them as lone surrogates)
            raise HandoffError(ERR_UNAUTHORIZED, "unknown credential")
        wait = self.buckets.take(hash_token(token), self.clock())
        if wait > 0:
            raise HandoffError(ERR_RATE_LIMITED, "too many requests with this credential; slow down",
                               retry_after_ms=max(1, int(wait * 1000)))
        if is_admin_key(token, self.settings.admin_key):
            who = ADMIN
        else:
            who = await principal_for(self.store, token)
        if roles and who.role not in roles:
            raise HandoffError(ERR_FORBIDDEN, f"this endpoint is for: {', '.join(roles)}")
        return who

    async def _admin(self, request: web.Request) -> None:
        if self.settings.admin_key is None:
            raise HandoffError(ERR_FORBIDDEN, "admin endpoints are disabled: set HANDOFF_ADMIN_KEY")
        await self._who(request, ROLE_ADMIN)

    @staticmethod
    async def _body(request: web.Request, *, optional: bool = False) -> Any:
        try:
            raw = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge -> 413 too_large
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
            raise HandoffError(ERR_INVALID_PAYLOAD, f"the body could not be read as sent ({exc.__cause__ or exc}); "
                               "send it as declared in Content-Encoding, or without one") from None
        if not raw.strip():
            if optional:
                return None
            raise HandoffError(ERR_INVALID_PAYLOAD, "the request needs a JSON body")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HandoffError(ERR_INVALID_PAYLOAD, f"the body is not valid JSON: {exc}") from None

    # -- endpoints ------------------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def create_bot(self, request: web.Request) -> web.Response:
        await self._admin(request)
        data = payloads.bot(await self._body(request))
        return web.json_response(await self.services.directory.create_bot(data))

    async def create_agent(self, request: web.Request) -> web.Response:
        await self._admin(request)
        data = payloads.agent(await self._body(request))
        return web.json_response(await self.services.directory.create_agent(data))

    async def me(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        return web.json_response({"role": who.role, "id": who.id, "name": who.name, "bots": sorted(who.bots),
                                   "conversation_id": who.conversation_id})

    async def register_device(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        data = payloads.device(await self._body(request))
        return web.json_response(await self.services.directory.register_device(who, data))

    async def devices(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        return web.json_response(await self.services.directory.devices(who))

    async def remove_device(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        device_id = payloads.path_id(request.match_info["device_id"], "device id")
        return web.json_response(await self.services.directory.remove_device(who, device_id))

    async def vapid_key(self, request: web.Request) -> web.Response:
        """The VAPID public key a browser passes to ``pushManager.subscribe`` (public: no credential needed)."""
        return web.json_response({"public_key": self.vapid_public_key})

    async def get_ladder(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        bot_id = payloads.path_id(request.match_info["bot_id"], "bot id")
        return web.json_response(await self.services.directory.bot_ladder(who, bot_id))

    async def put_ladder(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        bot_id = payloads.path_id(request.match_info["bot_id"], "bot id")
        new = payloads.ladder(await self._body(request))
        return web.json_response(await self.services.directory.bot_ladder(who, bot_id, new or None, replace=True))

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format; with HANDOFF_METRICS_TOKEN set, only for ``Authorization: Bearer <token>``."""
        token = self.settings.metrics_token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not is_admin_key(given.strip(), token):
                return web.Response(status=401, text="metrics: send 'Authorization: Bearer <HANDOFF_METRICS_TOKEN>'\n")
        assert self._metrics is not None, "HttpApi.bind() runs at start-up"
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def create_conversation(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        bot_id = payloads.path_id(request.match_info["bot_id"], "bot id")
        data = payloads.new_conversation(await self._body(request, optional=True))
        return web.json_response(await self.services.conversations.create_conversation(who, bot_id, data))

    async def queue(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        status = payloads.status_filter(request.query.get("status"))
        return web.json_response(await self.services.inbox.queue(who, status))

    async def escalate(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        cid = payloads.path_id(request.match_info["conversation_id"], "conversation id", conversation=True)
        data = payloads.escalate(await self._body(request, optional=True), conversation_id=cid)
        outcome = await self.delivery.run(cid, None, lambda: self.services.conversations.escalate(who, data))
        return web.json_response(outcome.ack)

    async def events(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        cid = payloads.path_id(request.match_info["conversation_id"], "conversation id", conversation=True)
        after = payloads.after_seq(request.query.get("after_seq"))
        return web.json_response(await self.services.inbox.events(who, cid, after))

    async def suggestions(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        cid = payloads.path_id(request.match_info["conversation_id"], "conversation id", conversation=True)
        return web.json_response(await self.services.sidebar.current(who, cid))

    async def tool_event(self, request: web.Request) -> web.Response:
        who = await self._who(request)
        cid = payloads.path_id(request.match_info["conversation_id"], "conversation id", conversation=True)
        data = payloads.tool_event(await self._body(request), conversation_id=cid)
        outcome = await self.delivery.run(cid, None, lambda: self.services.tool_events.post(who, data))
        return web.json_response(outcome.ack)
