"""The browser pages the server carries: the agent console at ``/console/`` and the customer widget at ``/widget/``.

They are plain HTML, CSS and JavaScript files inside the package (``handoff/static/``), with the official Socket.IO
browser client vendored under ``static/vendor/``: no build step, no CDN, so they work offline on a fresh machine.
Both speak docs/protocol.md like any other client (the console is its reference client); nothing here knows more
about conversations than the HTTP API and the /handoff namespace do.

Credentials travel in the URL's fragment (``#token=...``), which browsers never send to a server, and the pages
answer with ``Referrer-Policy: no-referrer`` and a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_PATH = "/console/"
WIDGET_PATH = "/widget/"

# Only this origin: scripts, styles, the Socket.IO connection (Chromium and Firefox count ws: of the same host as
# 'self'), the console's service worker. No inline script or style anywhere in the pages.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; object-src 'none'")
_STATIC_PREFIXES = (CONSOLE_PATH, WIDGET_PATH, "/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page(folder: str, *, framable: bool) -> Handler:
    """The handler of one page: its ``index.html`` with the security headers."""
    index = STATIC_DIR / folder / "index.html"
    # The console holds an agent's session: no other site may frame it. The widget is meant to be embedded.
    csp = _CSP if framable else _CSP + "; frame-ancestors 'none'"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(index, headers={
            "Content-Security-Policy": csp,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        })

    return handler


def _redirect(to: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(to)

    return handler


def page_routes() -> list[web.RouteDef | web.StaticDef]:
    """The routes of the console, the widget and their shared files (registered by ``create_app``).

    Each page's ``index.html`` has its own route ahead of its folder's static route, which serves the folder's
    other files (no directory listings, no symlinks out of the package).
    """
    return [
        web.get("/console", _redirect(CONSOLE_PATH)),
        web.get(CONSOLE_PATH, _page("console", framable=False)),
        web.static(CONSOLE_PATH, STATIC_DIR / "console"),
        web.get("/widget", _redirect(WIDGET_PATH)),
        web.get(WIDGET_PATH, _page("widget", framable=True)),
        web.static(WIDGET_PATH, STATIC_DIR / "widget"),
        web.static("/static/shared/", STATIC_DIR / "shared"),
        web.static("/static/vendor/", STATIC_DIR / "vendor"),
    ]


async def static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the pages' files are revalidated on each load (a cheap 304 while unchanged), so an
    upgraded server never runs against yesterday's script; and no browser guesses their content types."""
    if request.path.startswith(_STATIC_PREFIXES):
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


@dataclass(frozen=True)
class PilotLinks:
    """Ready-to-open links for a try-out: the console signed in as an agent, the widget as a customer."""

    console: str
    widget: str

    def __str__(self) -> str:
        return f"agent console:   {self.console}\ncustomer widget: {self.widget}"


def pilot_links(base_url: str, agent_token: str, customer_token: str, conversation_id: str | None = None) -> PilotLinks:
    """The console and widget URLs of the server at ``base_url``, with the credentials in the URL fragment.

    The fragment (after ``#``) never leaves the browser, so tokens do not end up in server or proxy logs; the
    pages read it, keep the token for the tab's session and clear it from the address bar.

    Args:
        base_url: the server's root, e.g. ``http://127.0.0.1:8080`` (what ``handoff serve`` prints).
        agent_token: an agent's token (``POST /api/v1/agents`` or the pilot file).
        customer_token: a conversation's customer token (``POST /api/v1/bots/{bot_id}/conversations``).
        conversation_id: that conversation's id, shown by the widget before it connects (optional: the widget
            learns it from the token).

    Raises:
        ValueError: when ``base_url`` is not an http(s) URL or a token is empty.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8080, not {base_url!r}")
    if not agent_token.strip() or not customer_token.strip():
        raise ValueError("pilot_links needs a non-empty agent token and customer token")
    root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    widget = f"{root}{WIDGET_PATH}#token={quote(customer_token, safe='')}"
    if conversation_id:
        widget += f"&conversation={quote(conversation_id, safe='')}"
    return PilotLinks(console=f"{root}{CONSOLE_PATH}#token={quote(agent_token, safe='')}", widget=widget)
