"""The browser pages the server carries: the agent console at ``/console/`` and the customer widget at ``/widget/``.

They are plain HTML, CSS and JavaScript files inside the package (``handoff/static/``), with the official Socket.IO
browser client vendored under ``static/vendor/``: no build step, no CDN, so they work offline on a fresh machine.
Both speak docs/protocol.md like any other client (the console is its reference client); nothing here knows more
about conversations than the HTTP API and the /handoff namespace do.

Credentials travel in the URL's fragment (``#token=...``), which browsers never send to a server, and the pages
answer with ``Referrer-Policy: no-referrer`` and a Content-Security-Policy that allows only this origin. Links for a
try-out come from ``copilot.live.links.pilot_links`` (re-exported here), so the workbench's demo can print them without
importing the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from copilot.live.links import PilotLinks, pilot_links
from copilot.live.protocol import CONSOLE_PATH, WIDGET_PATH

__all__ = ["STATIC_DIR", "PilotLinks", "page_routes", "pilot_links", "static_headers"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Only this origin: scripts, styles, the Socket.IO connection, the console's service worker. No inline script or
# style anywhere in the pages. connect-src also names this host's ws:/wss: URLs: older browsers do not count them as
# 'self'.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws://{host} wss://{host}; worker-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'")
_STATIC_PREFIXES = (CONSOLE_PATH, WIDGET_PATH, "/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page(folder: str, *, framable: bool) -> Handler:
    """The handler of one page: its ``index.html`` with the security headers."""
    index = STATIC_DIR / folder / "index.html"
    # The console holds an agent's session: no other site may frame it. The widget is meant to be embedded.
    csp = _CSP if framable else _CSP + "; frame-ancestors 'none'"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(index, headers={
            "Content-Security-Policy": csp.format(host=request.host),
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
