"""Links to the live server's browser pages for a try-out: the agent console and the customer chat widget.

The workbench's demo prints them once it has started ``handoff serve`` and created a bot, an agent and a
conversation; it lives here, beside the protocol's names, because ``copilot`` never imports the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from copilot.live.protocol import CONSOLE_PATH, WIDGET_PATH


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
