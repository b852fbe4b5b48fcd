"""What the server adds for the console and the widget: the pages themselves (served from the package, with their
security headers, nothing outside the static folder), the vendored Socket.IO client exactly as documented, the
package data that carries them into a non-editable install, and ``GET /conversations/{id}/suggestions`` (the
holder's current suggestions after a reload or a reconnect)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest
from handoff.pages import STATIC_DIR
from handoff_testing import GatedTestProvider, Server, StartServer

from copilot.live.protocol import ERR_FORBIDDEN, ERR_INVALID_TRANSITION, ERR_NOT_FOUND, EV_SUGGESTIONS

ROOT = Path(__file__).resolve().parents[2]


async def get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    async with server.http.get(server.url + path, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_pages_are_served_from_the_package_with_their_headers(server: Server) -> None:
    for page, title in (("/console/", b"<title>Handoff console</title>"), ("/widget/", b"<title>Chat with us</title>")):
        status, headers, body = await get(server, page)
        assert status == 200 and title in body, page
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-cache"
        csp = headers["Content-Security-Policy"]
        host = server.url.removeprefix("http://")
        assert "script-src 'self'" in csp and f"connect-src 'self' ws://{host} wss://{host};" in csp
        assert ("frame-ancestors 'none'" in csp) == (page == "/console/")  # the widget may be embedded
        # Every script and style the page names is served (no CDN, nothing inline).
        assert b"<script>" not in body and b"<style" not in body and b"http" not in body.split(b"</head>")[0]
        for ref in re.findall(rb'(?:src|href)="(?!data:)([^"#]+)"', body):
            target = (page + ref.decode()).replace("/console/../", "/").replace("/widget/../", "/")
            status, headers, _ = await get(server, target)
            assert status == 200, target
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Content-Type"].split(";")[0] in ("application/javascript", "text/javascript", "text/css")
    status, headers, _ = await get(server, "/console")
    assert status == 301 and headers["Location"] == "/console/"
    status, _, body = await get(server, "/console/sw.js")
    assert status == 200 and b"notificationclick" in body
    # Only the static folders: no listing, no way out of them.
    for path in ("/static/vendor/", "/console/../app.py", "/console/%2e%2e/app.py", "/static/../pages.py"):
        status, _, body = await get(server, path)
        assert status in (403, 404) and b"def " not in body, path


def test_the_vendored_socketio_client_is_the_documented_one() -> None:
    readme = (STATIC_DIR / "vendor" / "README.md").read_text()
    client = (STATIC_DIR / "vendor" / "socket.io.min.js").read_bytes()
    version = re.search(r"socket\.io-client@(4\.\d+\.\d+)", readme)
    assert version is not None
    assert client.startswith(b"/*!\n * Socket.IO v" + version.group(1).encode() + b"\n")
    assert hashlib.sha256(client).hexdigest() in readme
    assert (STATIC_DIR / "vendor" / "LICENSE.socket.io-client").read_text().startswith("The MIT License")


def test_package_data_carries_every_static_file() -> None:
    """A non-editable install gets the files matched by pyproject's package-data globs: all of them, here."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["handoff"]
    package = STATIC_DIR.parent
    carried = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    present = {p for p in STATIC_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert present and present <= carried, sorted(str(p.relative_to(package)) for p in present - carried)


async def test_current_suggestions_for_the_holder_only(start_server: StartServer) -> None:
    provider = GatedTestProvider()
    server = await start_server(provider=provider)
    bot = await server.bot()
    alice, bob = await server.agent(bot, name="Alice"), await server.agent(bot, name="Bob")
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "my card is blocked"}])
    path = f"/conversations/{cid}/suggestions"
    customer, alice_c = await server.client(customer_token), await server.client(alice.token)
    claim = await alice_c.ok("claim", {"conversation_id": cid})

    # Nothing computed yet for the latest state: an empty answer, not an older set.
    assert await server.expect("GET", path, alice.token) == {"conversation_id": cid, "for_seq": None,
                                                              "strategy": None, "items": []}
    provider.gate.set()
    offered = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["for_seq"] == claim["seq"])
    current = await server.expect("GET", path, alice.token)
    assert current == {k: offered[k] for k in ("conversation_id", "for_seq", "strategy", "items")}
    assert current["items"][0]["text"] == "reply to: my card is blocked"

    # A newer message makes that set stale until the next one is stored.
    provider.gate.clear()
    await customer.ok("message", {"conversation_id": cid, "client_id": "c1", "text": "hello?"})
    assert (await server.expect("GET", path, alice.token))["items"] == []
    provider.gate.set()
    newer = await alice_c.wait_for(EV_SUGGESTIONS, lambda e: e["items"][0]["text"] == "reply to: hello?")
    assert (await server.expect("GET", path, alice.token))["for_seq"] == newer["for_seq"]

    # Only the holder: other agents, the customer, the bot, strangers are refused; unknown ids are not found.
    other_bot = await server.bot()
    stranger = await server.agent(other_bot)
    for token, code in ((bob.token, ERR_FORBIDDEN), (customer_token, ERR_FORBIDDEN), (bot.api_key, ERR_FORBIDDEN),
                        (stranger.token, ERR_FORBIDDEN)):
        status, body = await server.request("GET", path, token)
        assert (status, body["error"]["code"]) == (403, code)
    status, body = await server.request("GET", "/conversations/no-such-thing/suggestions", alice.token)
    assert (status, body["error"]["code"]) == (404, ERR_NOT_FOUND)
    await alice_c.ok("hand_back", {"conversation_id": cid})
    status, body = await server.request("GET", path, alice.token)
    assert (status, body["error"]["code"]) == (409, ERR_INVALID_TRANSITION)
