"""The agent console and the customer widget in a real headless Chromium against a real server on 127.0.0.1, with
a scripted bot (a real Socket.IO client): the queue on opening and live, escalation, a claim race between two agent
pages, the transcript with the bot's turns set apart, chat both ways with typing, taking suggestions (as is and
edited, reported with suggestion_feedback), hand back with a note, a second escalation, resolve. Screenshots of
both pages go to test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from browser_testing import PHONE, CannedRepliesTestProvider, Opened, ScriptedBot, eventually, open_page, shot
from handoff_testing import StartServer, parts
from playwright.async_api import expect

from copilot.live.links import pilot_links

pytestmark = pytest.mark.browser
expect.set_options(timeout=10_000)  # the machine is shared; a failing wait means the page never got there
NO_PUSH = ("/api/v1/push/vapid-public-key",)  # this server offers no Web Push yet: the console notes it


def queue_item(opened: Opened, conversation_id: str) -> Any:
    return opened.page.locator(f'#queue li[data-conversation="{conversation_id}"]')


async def say(widget: Opened, text: str) -> None:
    box = widget.page.get_by_label("Your message")
    await box.fill(text)
    await box.press("Enter")
    # Acknowledged: shown in the transcript (not the outbox) once stored.
    await expect(widget.page.locator("#transcript .from-customer", has_text=text)).to_have_count(1)


async def stored_messages(server: Any, conversation_id: str) -> list[dict[str, Any]]:
    async with parts(server).store.read() as tx:
        return [e for e in await tx.events.after(conversation_id, 0) if e["kind"] == "message"]


async def test_escalation_claim_race_chat_suggestions_hand_back_and_resolve(
        browser: Any, start_server: StartServer, screenshots: Path) -> None:
    server = await start_server(provider=CannedRepliesTestProvider())
    bot = await server.bot(bot_id="acme-shop")
    alice, bob = await server.agent(bot, name="Alice"), await server.agent(bot, name="Bob")
    scripted = await ScriptedBot(server, bot).start()
    try:
        # Waiting before any console opens: the queue must come from GET /conversations, not only from events.
        early_cid, _ = await server.conversation(bot)
        await server.escalate(bot, early_cid, reason="refund", transcript=[
            {"role": "customer", "text": "I want a refund"}, {"role": "bot", "text": "I cannot do refunds."}])
        cid, customer_token = await server.conversation(bot)
        links = pilot_links(server.url, alice.token, customer_token, cid)
        a = await open_page(browser, links.console, expected_failures=NO_PUSH)
        bob_console = pilot_links(server.url, bob.token, customer_token).console
        b = await open_page(browser, bob_console, expected_failures=NO_PUSH)
        w = await open_page(browser, links.widget, viewport=PHONE)
        for console, name in ((a, "Alice"), (b, "Bob")):
            await expect(console.page.locator("#who")).to_have_text(f"Signed in as {name}")
            await expect(console.page.locator("#connection")).to_have_text("Connected")
            await expect(queue_item(console, early_cid)).to_contain_text("I want a refund")
            assert "token" not in console.page.url  # the credential left the address bar

        # The customer talks to the bot.
        await expect(w.page.locator("#status")).to_have_text("You are chatting with the assistant.")
        await say(w, "Hello, where is my parcel?")
        await expect(w.page.locator("#transcript .from-bot")).to_contain_text(
            [ScriptedBot.reply_to("Hello, where is my parcel?")])
        # ... asks for a human: the bot escalates, and both consoles' queues show it live.
        await say(w, "I would like to talk to a human")
        await expect(w.page.locator("#status")).to_have_text("Waiting for an agent to join…")
        for console in (a, b):
            await expect(queue_item(console, cid)).to_contain_text("I would like to talk to a human")
            await expect(console.page.locator("#queue-count")).to_have_text("2")

        # Both agents open it: the transcript, with the bot's turns set apart.
        for console in (a, b):
            await queue_item(console, cid).get_by_role("button").click()
            bot_turns = console.page.locator("#transcript .msg.from-bot")
            await expect(bot_turns).to_have_count(2)
            await expect(bot_turns.locator(".who")).to_contain_text(["Bot", "Bot"])
            await expect(console.page.locator("#transcript .msg.from-customer")).to_have_count(2)
            await expect(console.page.locator("#transcript .sys")).to_contain_text(
                ["The bot escalated to a human: the customer asked for a human"])
            await expect(console.page.get_by_role("button", name="Claim")).to_be_visible()

        # The claim race: both press Claim in the same instant; the server's compare-and-set picks one.
        await asyncio.gather(*(c.page.evaluate("document.getElementById('claim').click()") for c in (a, b)))

        async def settled() -> tuple[bool, bool] | None:
            holds = (await a.page.locator("#composer").is_visible(), await b.page.locator("#composer").is_visible())
            return holds if holds[0] != holds[1] else None

        a_won, _ = await eventually(settled)
        (agent, agent_name), (other, other_name) = ((a, "Alice"), (b, "Bob")) if a_won else ((b, "Bob"), (a, "Alice"))
        # The loser's own claim reached the server and was refused: only that answer says "Too late".
        await expect(other.page.locator("#conv-alert")).to_have_text(f"Too late: claimed by {agent_name}.")
        await expect(queue_item(other, cid)).to_contain_text(f"claimed by {agent_name}")
        await expect(other.page.locator("#conv-status")).to_have_text(f"Claimed by {agent_name}")
        await expect(agent.page.locator("#conv-status")).to_have_text("You hold this conversation")
        await expect(agent.page.locator("#mine li")).to_have_count(1)
        await expect(queue_item(agent, cid)).to_have_count(0)
        await expect(w.page.locator("#status")).to_have_text(f"An agent joined: {agent_name}.")
        async with parts(server).store.read() as tx:
            claims = [e for e in await tx.events.after(cid, 0) if e["kind"] == "claimed"]
        assert [e["agent_name"] for e in claims] == [agent_name]

        # Suggestions for the claim, for the claiming agent only.
        suggestions = agent.page.locator("#suggestions button")
        await expect(suggestions).to_have_count(3)
        await expect(suggestions.first).to_contain_text("I would like to talk to a human")
        await expect(other.page.locator("#suggestions button")).to_have_count(0)
        await shot(other, screenshots, "console-claim-lost")

        # Typing, customer -> agent (never to the customer's own page), then the message.
        box = w.page.get_by_label("Your message")
        await box.press_sequentially("My parcel number is 42", delay=20)
        await expect(agent.page.locator("#typing")).to_have_text("The customer is typing…")
        await expect(w.page.locator("#typing")).to_have_text("")
        await box.press("Enter")
        await expect(agent.page.locator("#transcript .from-customer", has_text="My parcel number is 42")
                     ).to_have_count(1)
        await expect(agent.page.locator("#typing")).to_have_text("")

        # Typing, agent -> customer; emptying the box says stop. A second customer socket counts what is sent.
        watcher = await server.client(customer_token)
        await watcher.ok("join", {"conversation_id": cid})
        reply = agent.page.get_by_label("Reply to the customer")
        await reply.press_sequentially("Let me", delay=20)
        await expect(w.page.locator("#typing")).to_have_text(f"{agent_name} is typing…")
        await reply.fill("")
        await reply.dispatch_event("input")
        await expect(w.page.locator("#typing")).to_have_text("")
        assert [e["state"] for e in watcher.events("typing")] == ["start", "stop"]

        # Taking a suggestion as is: the text goes out with the template's label, the use is reported.
        await expect(suggestions.first).to_contain_text("My parcel number is 42")
        first_set = await suggestions.evaluate_all("(els) => els.map((e) => e.dataset.suggestion)")
        await suggestions.first.click()
        picked = "Sorry about that. About \u201cMy parcel number is 42\u201d: let me check."
        await expect(reply).to_have_value(picked)
        await reply.press("Enter")
        await expect(w.page.locator("#transcript .from-agent", has_text=picked)).to_have_count(1)
        # A suggestion put in the box is not typing: no indicator went out before the message (same connection,
        # so anything sent before it would have arrived first).
        await watcher.wait_for("message", lambda e: e["text"] == picked)
        assert [e["state"] for e in watcher.events("typing")] == ["start", "stop"]
        await shot(agent, screenshots, "console-conversation")

        # A new set follows the agent's own message; the second one is taken with Alt+2, edited, then sent.
        async def new_set() -> list[str] | None:
            ids = await suggestions.evaluate_all("(els) => els.map((e) => e.dataset.suggestion)")
            return ids if len(ids) == 3 and ids != first_set else None

        second_set = await eventually(new_set)
        await reply.focus()
        await agent.page.keyboard.press("Alt+2")
        await expect(reply).to_have_value("Could you give me your order number?")
        await reply.press("End")
        await reply.press_sequentially(" The one in your email.")
        await reply.press("Enter")
        edited = "Could you give me your order number? The one in your email."
        await expect(w.page.locator("#transcript .from-agent", has_text=edited)).to_have_count(1)

        messages = await eventually(lambda: _agent_messages(server, cid, 2))
        assert [(m["text"], m.get("label")) for m in messages] == [(picked, "apologize_check"), (edited, None)]

        async def feedback() -> list[tuple[str, str]] | None:
            async with parts(server).store.read() as tx:
                rows = await tx.feedback.of_conversation(cid)
            return [(r["suggestion_id"], r["action"]) for r in rows] if len(rows) == 6 else None

        assert sorted(await eventually(feedback)) == sorted([
            (first_set[0], "sent"), (first_set[1], "ignored"), (first_set[2], "ignored"),
            (second_set[0], "ignored"), (second_set[1], "edited"), (second_set[2], "ignored")])

        # A reload (or a reconnect that missed them) shows the current suggestions again, from the server.
        async def third() -> list[str] | None:
            ids = await suggestions.evaluate_all("(els) => els.map((e) => e.dataset.suggestion)")
            return ids if len(ids) == 3 and ids != second_set else None

        third_set = await eventually(third)
        await agent.page.reload()
        await expect(agent.page.locator("#who")).to_have_text(f"Signed in as {agent_name}")
        await agent.page.locator(f'#mine li[data-conversation="{cid}"] button').click()
        await expect(agent.page.locator("#transcript .msg")).to_have_count(len(await stored_messages(server, cid)))
        await expect(suggestions).to_have_count(3)
        assert await suggestions.evaluate_all("(els) => els.map((e) => e.dataset.suggestion)") == third_set

        # The same console on a phone-sized screen.
        await agent.page.set_viewport_size(PHONE)
        await expect(agent.page.get_by_role("button", name="Back to the lists")).to_be_visible()
        await shot(agent, screenshots, "console-phone")
        await agent.page.set_viewport_size({"width": 1280, "height": 800})

        # Hand back with a note: the bot gets the turns and the note, the customer is told.
        await agent.page.get_by_label("Note for the bot (optional)").fill("Parcel 42 is late; customer informed.")
        await agent.page.get_by_role("button", name="Hand back to the bot").click()
        await expect(agent.page.locator("#conv-alert")).to_have_text("Handed back to the bot.")
        await expect(agent.page.locator("#transcript .sys").last).to_have_text(
            "Handed back to the bot: Parcel 42 is late; customer informed.")
        await expect(agent.page.locator("#composer")).to_be_hidden()
        await expect(agent.page.locator("#mine li")).to_have_count(0)
        await expect(w.page.locator("#status")).to_have_text("You are back with the assistant.")
        await expect(w.page.locator("#transcript .from-bot").last).to_have_text(re.compile("I am back. Anything else?"))
        await eventually(lambda: _true(scripted.handed_back))
        (handed,) = scripted.handed_back
        assert handed["note"] == "Parcel 42 is late; customer informed."
        assert [t["text"] for t in handed["turns"] if t["role"] == "agent"] == [picked, edited]
        await shot(w, screenshots, "widget-phone")

        # A second escalation; this time the other agent claims it (a plain click) and resolves it.
        await say(w, "Sorry, an agent again please")
        await expect(queue_item(other, cid)).to_contain_text("an agent again please")
        await expect(queue_item(other, cid).locator(".taken")).to_have_count(0)
        await queue_item(other, cid).get_by_role("button").click()
        await other.page.get_by_role("button", name="Claim").click()
        await expect(other.page.locator("#conv-status")).to_have_text("You hold this conversation")
        await expect(other.page.locator("#conv-alert")).to_have_text("")
        await expect(w.page.locator("#status")).to_have_text(f"An agent joined: {other_name}.")
        await other.page.get_by_role("button", name="Resolve").click()
        await expect(other.page.locator("#conv-status")).to_have_text("Resolved")
        await expect(w.page.locator("#status")).to_have_text("This conversation is closed. Write again to reopen it.")
        async with parts(server).store.read() as tx:
            row = await tx.conversations.get(cid)
        assert row is not None and row.status == "resolved"
        # The transcript the agent saw is what was stored, in order, each message once.
        stored = [m["text"] for m in await stored_messages(server, cid)]
        shown = await other.page.locator("#transcript .msg").evaluate_all(
            "(els) => els.map((e) => e.childNodes[1].textContent)")
        assert shown == stored
        for opened in (a, b, w):
            opened.assert_no_errors()
    finally:
        await scripted.close()


async def _agent_messages(server: Any, cid: str, count: int) -> list[dict[str, Any]] | None:
    messages = [m for m in await stored_messages(server, cid) if m["role"] == "agent"]
    return messages if len(messages) == count else None


async def _true(value: Any) -> Any:
    return value


async def test_lookups_show_as_cards_in_the_console_and_never_in_the_widget(
        browser: Any, start_server: StartServer, screenshots: Path) -> None:
    server = await start_server()
    bot = await server.bot(bot_id="hotel-desk")
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    links = pilot_links(server.url, alice.token, customer_token, cid)
    w = await open_page(browser, links.widget, viewport=PHONE)
    await say(w, "Is the Hotel du Nord free on Friday?")
    path = f"/conversations/{cid}/tool-events"
    await server.expect("POST", path, bot.api_key, json={
        "name": "hotel_search", "request": {"name": "Hotel du Nord", "day": "Friday", "guests": 2, "rooms": 1},
        "result": {"items": [{"name": "Hotel du Nord", "available": True, "price": 120}], "total": 1}})
    await server.expect("POST", path, bot.api_key, json={
        "name": "hotel_book", "request": {"name": "Hotel du Nord"}, "error": "the booking service timed out"})
    await server.escalate(bot, cid, reason="booking failed")
    a = await open_page(browser, links.console, expected_failures=NO_PUSH)
    await queue_item(a, cid).get_by_role("button").first.click()
    await a.page.get_by_role("button", name="Claim").click()
    await expect(a.page.locator("#transcript .tool")).to_have_count(2)
    found, failed = a.page.locator("#transcript .tool.found"), a.page.locator("#transcript .tool.failed")
    await expect(found).to_contain_text("hotel_search")
    await expect(found).to_contain_text("name: Hotel du Nord · day: Friday · guests: 2 · …")
    await expect(found).to_contain_text("1 result: name: Hotel du Nord, available: true, price: 120")
    await expect(failed).to_contain_text("Failed: the booking service timed out")
    # The agent's own lookup, live: nothing found.
    await server.expect("POST", path, alice.token, json={"name": "hotel_search", "request": {"day": "Saturday"},
                                                        "result": {"items": [], "total": 0}})
    await expect(a.page.locator("#transcript .tool.empty")).to_contain_text("Nothing found")
    await shot(a, screenshots, "console-lookups")
    await a.page.set_viewport_size(PHONE)
    await shot(a, screenshots, "console-lookups-phone")
    # The customer saw none of it, live or after a reload.
    await w.page.reload()
    await expect(w.page.locator("#transcript .from-customer")).to_have_count(1)
    assert await w.page.locator("#transcript .tool").count() == 0
    assert "hotel_search" not in await w.page.locator("#transcript").inner_text()
    a.assert_no_errors()
    w.assert_no_errors()
