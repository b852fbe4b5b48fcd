"""Helpers of the browser tests: the scripted chatbot (a real Socket.IO client), a deterministic test suggestion
provider, and pages opened in their own browser contexts with their errors collected."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from handoff.suggestions import ProvidedSuggestions
from handoff_testing import WAIT_S, Bot, Server

from copilot.data.context import Context, Suggestion
from copilot.live.protocol import NAMESPACE

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
ASKS_FOR_HUMAN = ("human", "agent", "person")


class ScriptedBot:
    """The chatbot of the browser tests: a real Socket.IO client with the bot's API key.

    It answers every customer message it hears (the server sends it customer messages only while the conversation
    is with the bot) and escalates when the customer asks for a human, with its turns already stored as messages.
    It records the ``handed_back`` events it receives.
    """

    def __init__(self, server: Server, bot: Bot) -> None:
        self.server = server
        self.bot = bot
        self.sio = socketio.AsyncClient(reconnection=False)
        self.handed_back: list[dict[str, Any]] = []
        self.heard: list[dict[str, Any]] = []
        self.sio.on("message", self._on_message, namespace=NAMESPACE)
        self.sio.on("handed_back", self._on_handed_back, namespace=NAMESPACE)

    async def start(self) -> ScriptedBot:
        await self.sio.connect(self.server.url, auth={"token": self.bot.api_key}, namespaces=[NAMESPACE],
                               transports=["websocket"], wait_timeout=WAIT_S)
        return self

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()

    @staticmethod
    def reply_to(text: str) -> str:
        return f"Assistant here. You said: {text}"

    async def _on_message(self, event: dict[str, Any]) -> None:
        if event.get("role") != "customer":
            return
        self.heard.append(event)
        cid, text = event["conversation_id"], event["text"]
        if any(word in text.lower() for word in ASKS_FOR_HUMAN):
            await self._ok("message", {"conversation_id": cid, "client_id": f"bot-{event['seq']}",
                                       "text": "Let me find a human agent for you.", "label": "escalate_human"})
            await self._ok("escalate", {"conversation_id": cid, "reason": "the customer asked for a human"})
        else:
            await self._ok("message", {"conversation_id": cid, "client_id": f"bot-{event['seq']}",
                                       "text": self.reply_to(text)})

    async def _on_handed_back(self, event: dict[str, Any]) -> None:
        self.handed_back.append(event)
        await self._ok("message", {"conversation_id": event["conversation_id"],
                                   "client_id": f"bot-back-{event['seq']}", "text": "I am back. Anything else?"})

    async def _ok(self, event: str, payload: dict[str, Any]) -> None:
        ack = await self.sio.call(event, payload, namespace=NAMESPACE, timeout=WAIT_S)
        assert ack.get("ok") is True, f"scripted bot: {event} {payload} refused: {ack}"


class CannedRepliesTestProvider:
    """A deterministic test provider (the real SuggestionProvider interface; the MLflow-backed one comes later):
    three suggestions, the first naming the customer's latest words, two of them response templates (labels)."""

    strategy = "canned-replies-test"

    async def suggest(self, bot_id: str, context: Context, k: int) -> ProvidedSuggestions | None:
        last = context.last("customer")
        items = [
            Suggestion(f"Sorry about that. About \u201c{last.text if last else ''}\u201d: let me check.", 0.9,
                       "apologize_check"),
            Suggestion("Could you give me your order number?", 0.6, "ask_order_number"),
            Suggestion("Thanks for waiting, I am looking into it.", 0.3),
        ]
        return ProvidedSuggestions(self.strategy, items[:k])


@dataclass
class Opened:
    """A page in its own browser context (its own storage and network, as a separate person's browser)."""

    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)

    def assert_no_errors(self) -> None:
        assert self.errors == [], f"the page reported errors: {self.errors}"


async def open_page(browser: Any, url: str, *, viewport: dict[str, int] | None = None,
                    permissions: list[str] | None = None, init_script: str | None = None,
                    expected_failures: tuple[str, ...] = ()) -> Opened:
    """Open ``url`` in a new context; uncaught exceptions and console errors are collected in ``errors``, except
    the browser's own log line for a failed request the test expects (``expected_failures``: URL endings, e.g. the
    push endpoint a server lacks, or a sign-in with a wrong token)."""
    context = await browser.new_context(viewport=viewport or DESKTOP, permissions=permissions or [])
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    opened = Opened(context, page)

    def on_console(message: Any) -> None:
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource") and where.endswith(expected_failures):
            return
        opened.errors.append(f"{message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: opened.errors.append(f"uncaught: {exc}"))
    await page.goto(url)
    return opened


async def shot(opened: Opened, folder: Path, name: str) -> Path:
    """Save a screenshot of the whole page (test-artifacts/screenshots/, git-ignored)."""
    path = folder / f"{name}.png"
    await opened.page.screenshot(path=str(path), full_page=True)
    return path


async def eventually(check: Any, wait_s: float = WAIT_S) -> Any:
    """Poll an async ``check`` until it returns a truthy value (for reading the database after a page acted)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {value!r} after {wait_s} s")
        await asyncio.sleep(0.05)
