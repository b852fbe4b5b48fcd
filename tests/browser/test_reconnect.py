"""A dropped and restored connection in the real browser: while one side is offline the other keeps writing,
and the offline side writes too; once back, each page shows every message exactly once, in the stored order, and
the database holds each message once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from browser_testing import PHONE, Opened, eventually, open_page, shot
from handoff_testing import StartServer, parts
from playwright.async_api import expect

from copilot.live.links import pilot_links

pytestmark = pytest.mark.browser
expect.set_options(timeout=10_000)
NO_PUSH = ("/api/v1/push/vapid-public-key",)


async def write(opened: Opened, label: str, text: str) -> None:
    box = opened.page.get_by_label(label)
    await box.fill(text)
    await box.press("Enter")


async def shown_texts(opened: Opened) -> list[str]:
    return list(await opened.page.locator("#transcript .msg").evaluate_all(
        "(els) => els.map((e) => e.childNodes[1].textContent)"))


async def test_a_dropped_connection_loses_no_message_and_doubles_none(
        browser: Any, start_server: StartServer, screenshots: Path) -> None:
    server = await start_server()
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    await server.escalate(bot, cid, reason="billing", transcript=[
        {"role": "customer", "text": "I was charged twice"}, {"role": "bot", "text": "An agent will help you."}])
    links = pilot_links(server.url, alice.token, customer_token, cid)
    console = await open_page(browser, links.console, expected_failures=NO_PUSH)
    widget = await open_page(browser, links.widget, viewport=PHONE)
    await console.page.locator(f'#queue li[data-conversation="{cid}"] button').click()
    await console.page.get_by_role("button", name="Claim").click()
    await expect(console.page.locator("#composer")).to_be_visible()
    await expect(widget.page.locator("#status")).to_have_text("An agent joined: Alice.")

    # The agent's browser drops. The customer writes on; the agent writes too, into its outbox.
    await console.context.set_offline(True)
    await expect(console.page.locator("#connection")).to_have_text(re.compile("Connection lost"))
    from_customer = [f"Customer, agent offline {i}" for i in range(3)]
    for text in from_customer:
        await write(widget, "Your message", text)
        await expect(widget.page.locator("#transcript .from-customer", has_text=text)).to_have_count(1)
    from_agent = [f"Agent, while offline {i}" for i in range(2)]
    for text in from_agent:
        await write(console, "Reply to the customer", text)
    await expect(console.page.locator("#outbox .msg")).to_have_count(2)
    await expect(console.page.locator("#outbox .state").first).to_have_text("Waiting for the connection…")
    await shot(console, screenshots, "console-offline")

    await console.context.set_offline(False)
    await expect(console.page.locator("#connection")).to_have_text("Connected", timeout=20_000)
    for text in from_customer:
        await expect(console.page.locator("#transcript .from-customer", has_text=text)).to_have_count(1)
    for text in from_agent:
        await expect(widget.page.locator("#transcript .from-agent", has_text=text)).to_have_count(1)
    await expect(console.page.locator("#outbox .msg")).to_have_count(0)

    # Now the customer's browser drops, while both sides write.
    await widget.context.set_offline(True)
    await expect(widget.page.locator("#connection")).to_have_text(re.compile("Connection lost"))
    to_customer = [f"Agent, customer offline {i}" for i in range(2)]
    for text in to_customer:
        await write(console, "Reply to the customer", text)
        await expect(console.page.locator("#transcript .from-agent", has_text=text)).to_have_count(1)
    await write(widget, "Your message", "Customer, while offline")
    await expect(widget.page.locator("#outbox .msg")).to_have_count(1)
    await widget.context.set_offline(False)
    await expect(widget.page.locator("#connection")).to_have_text("", timeout=20_000)
    for text in to_customer:
        await expect(widget.page.locator("#transcript .from-agent", has_text=text)).to_have_count(1)
    await expect(console.page.locator("#transcript .from-customer", has_text="Customer, while offline")
                 ).to_have_count(1)
    await expect(widget.page.locator("#outbox .msg")).to_have_count(0)

    # Stored once each; both pages show exactly what was stored, in order.
    async def stored() -> list[str] | None:
        async with parts(server).store.read() as tx:
            texts = [e["text"] for e in await tx.events.after(cid, 0) if e["kind"] == "message"]
        return texts if len(texts) == 10 else None

    texts = await eventually(stored)
    assert sorted(texts[2:]) == sorted([*from_customer, *from_agent, *to_customer, "Customer, while offline"])
    assert len(set(texts)) == len(texts)
    assert await shown_texts(console) == texts
    assert await shown_texts(widget) == texts
    await shot(widget, screenshots, "widget-after-reconnect")
