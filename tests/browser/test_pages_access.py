"""Signing in by hand, from the keyboard alone, with every control labelled; wrong credentials get a clear message.
Notifications: a browser notification for an escalation while the page is hidden, and Web Push that degrades to a
note when the server offers no VAPID key, or subscribes and registers the device when it does (with the browser's
push service stubbed: it lives on the internet, out of this machine's reach)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from browser_testing import PHONE, CannedRepliesTestProvider, eventually, open_page, shot
from handoff_testing import StartServer, parts
from playwright.async_api import expect

pytestmark = pytest.mark.browser
expect.set_options(timeout=10_000)
NO_PUSH = ("/api/v1/push/vapid-public-key",)

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll("input, textarea, button, select")]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
    .map((e) => e.outerHTML)"""


async def test_console_and_widget_from_the_keyboard_with_labelled_controls(
        browser: Any, start_server: StartServer, screenshots: Path) -> None:
    server = await start_server(provider=CannedRepliesTestProvider())
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    cid, customer_token = await server.conversation(bot)
    other_cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "My invoice is wrong"}])

    # The console without a token in the URL: a sign-in form with the focus in it.
    console = await open_page(browser, server.url + "/console/", expected_failures=(*NO_PUSH, "/api/v1/agents/me"))
    page = console.page
    await expect(page.get_by_label("Agent token")).to_be_focused()
    assert await page.evaluate(UNLABELLED_CONTROLS) == []
    await page.keyboard.type("not-a-token")
    await page.keyboard.press("Enter")
    await expect(page.locator("#signin-error")).to_have_text("This token is not known to the server.")
    await page.get_by_label("Agent token").fill(customer_token)
    await page.keyboard.press("Enter")
    await expect(page.locator("#signin-error")).to_have_text(
        "This is a customer credential; the console needs an agent token.")
    await page.get_by_label("Agent token").fill(alice.token)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_have_text("Signed in as Alice")
    await expect(page.locator("#connection")).to_have_text("Connected")

    # Open, claim, pick a suggestion and answer without the mouse.
    await page.locator(f'#queue li[data-conversation="{cid}"] button').focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#conv-title")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Claim")).to_be_focused()
    await page.keyboard.press("Enter")
    reply = page.get_by_label("Reply to the customer")
    await expect(reply).to_be_focused()
    await expect(page.locator("#suggestions button")).to_have_count(3)
    await page.keyboard.press("Alt+1")
    await expect(reply).to_have_value("Sorry about that. About \u201cMy invoice is wrong\u201d: let me check.")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("Which line?")
    await page.keyboard.press("Enter")
    await expect(page.locator("#transcript .from-agent")).to_have_count(1)
    await expect(page.locator("#transcript .from-agent")).to_contain_text("let me check.\nWhich line?")
    assert await page.evaluate(UNLABELLED_CONTROLS) == []
    console.assert_no_errors()

    # The widget without a token: a form; a token of another conversation is refused with a clear message.
    widget = await open_page(browser, server.url + "/widget/", viewport=PHONE)
    wpage = widget.page
    await expect(wpage.get_by_label("Chat token")).to_be_focused()
    assert await wpage.evaluate(UNLABELLED_CONTROLS) == []
    await wpage.keyboard.type(customer_token)
    await wpage.keyboard.press("Tab")
    await expect(wpage.get_by_label("Conversation id (optional)")).to_be_focused()
    await wpage.keyboard.type(other_cid)
    await wpage.keyboard.press("Enter")
    await expect(wpage.locator("#start-error")).to_have_text("This chat token belongs to another conversation.")
    await wpage.get_by_label("Conversation id (optional)").fill(cid)
    await wpage.keyboard.press("Enter")
    await expect(wpage.locator("#status")).to_have_text("An agent joined: Alice.")
    await expect(wpage.locator("#transcript .from-agent")).to_contain_text("Which line?")
    await expect(wpage.get_by_label("Your message")).to_be_focused()
    await wpage.keyboard.type("Line 3")
    await wpage.keyboard.press("Enter")
    await expect(page.locator("#transcript .from-customer", has_text="Line 3")).to_have_count(1)
    assert await wpage.evaluate(UNLABELLED_CONTROLS) == []
    widget.assert_no_errors()
    await shot(console, screenshots, "console-keyboard")


# Records the page's notifications and lets the test say whether the page is hidden (a headless page is always
# visible); the real Notification still runs underneath.
NOTIFICATIONS_SPY = """
window.__notifications = [];
window.__hidden = false;
const RealNotification = window.Notification;
class RecordedNotification extends RealNotification {
  constructor(title, options) {
    super(title, options);
    window.__notifications.push({ title, body: options && options.body, tag: options && options.tag });
  }
}
Object.defineProperty(window, "Notification", { value: RecordedNotification, configurable: true });
Object.defineProperty(Document.prototype, "visibilityState", {
  configurable: true, get() { return window.__hidden ? "hidden" : "visible"; } });
"""

# Chromium's push service is on the internet: this stands in for it (and only for it). The subscription it returns
# has the shape of a real one; the console registers it with the real server.
PUSH_SERVICE_STUB = """
window.__subscribed = [];
PushManager.prototype.getSubscription = async function () { return null; };
PushManager.prototype.subscribe = async function (options) {
  window.__subscribed.push(Array.from(new Uint8Array(options.applicationServerKey)));
  return {
    endpoint: "https://push.invalid/send/console-test",
    options: { applicationServerKey: options.applicationServerKey },
    toJSON() {
      return { endpoint: this.endpoint, expirationTime: null, keys: {
        p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        auth: "tBHItJI5svbpez7KI4CCXg" } };
    },
    async unsubscribe() { return true; },
  };
};
"""


async def escalate_new(server: Any, bot: Any, text: str) -> str:
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid, transcript=[{"role": "customer", "text": text}])
    return cid


async def test_notifications_while_hidden_and_push_degrading_without_a_vapid_key(
        browser: Any, start_server: StartServer) -> None:
    server = await start_server()
    bot = await server.bot(bot_id="notify-bot")
    alice = await server.agent(bot, name="Alice")
    console = await open_page(browser, "about:blank", permissions=["notifications"],
                              init_script=NOTIFICATIONS_SPY, expected_failures=NO_PUSH)
    page = console.page
    # A server without push (an older one, or one a proxy hides it on) answers 404 for the VAPID key: played here
    # by the browser's request interception, since this server has push.
    await page.route("**/api/v1/push/vapid-public-key", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body=json.dumps({"error": {"code": "not_found", "message": "no push here"}})))
    await page.goto(server.url + f"/console/#token={alice.token}")
    await expect(page.locator("#connection")).to_have_text("Connected")
    # No VAPID key endpoint: a short note, no error, in-page notifications still on.
    await expect(page.locator("#notify-note")).to_have_text(
        "Notifications on while this page is open. This server does not offer push notifications to devices.")
    await expect(page.get_by_role("button", name="Enable notifications")).to_be_hidden()

    visible_cid = await escalate_new(server, bot, "seen on screen")
    await expect(page.locator(f'#queue li[data-conversation="{visible_cid}"]')).to_be_visible()
    await page.evaluate("window.__hidden = true")
    hidden_cid = await escalate_new(server, bot, "please help, my card was swallowed")
    await expect(page.locator(f'#queue li[data-conversation="{hidden_cid}"]')).to_be_visible()
    notifications = await page.evaluate("window.__notifications")
    assert notifications == [{"title": "Customer waiting (notify-bot)", "body": "please help, my card was swallowed",
                              "tag": f"handoff-{hidden_cid}"}]
    await expect(page).to_have_title("(2) Handoff console")
    # A notification's link (#open=<id>, what the service worker opens) lands on that conversation.
    await page.evaluate("window.__hidden = false")
    await page.goto(server.url + f"/console/#open={hidden_cid}")
    await page.reload()
    await expect(page.locator("#conv-title")).to_have_text(f"notify-bot · {hidden_cid}")
    await expect(page.locator("#transcript .from-customer")).to_contain_text(["please help, my card was swallowed"])
    console.assert_no_errors()


async def test_webpush_subscription_registered_with_a_stubbed_browser_push_service(
        browser: Any, start_server: StartServer) -> None:
    server = await start_server()
    bot = await server.bot()
    alice = await server.agent(bot, name="Alice")
    key = (await server.expect("GET", "/push/vapid-public-key"))["public_key"]
    # The browser's own push service is on the internet: PUSH_SERVICE_STUB stands in for it (named so); the VAPID
    # key comes from the real server and the device registration goes to it.
    console = await open_page(browser, server.url + f"/console/#token={alice.token}", permissions=["notifications"],
                              init_script=PUSH_SERVICE_STUB)
    await expect(console.page.locator("#notify-note")).to_have_text(
        "Push notifications on for this browser, also when the console is closed.")
    subscribed = await console.page.evaluate("window.__subscribed")
    assert subscribed == [list(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))]

    async def devices() -> list[dict[str, Any]]:
        async with parts(server).store.read() as tx:
            return await tx.devices.of_agent(alice.agent_id)

    (device,) = await eventually(devices)
    assert device["kind"] == "webpush"
    assert device["subscription"]["endpoint"] == "https://push.invalid/send/console-test"
    assert set(device["subscription"]["keys"]) == {"p256dh", "auth"}
    stored_id = await console.page.evaluate(f"localStorage.getItem('handoff.console.device.{alice.agent_id}')")
    assert stored_id == device["device_id"]
    # The service worker that shows pushes is installed for the console's scope.
    scope = await console.page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r && r.scope)")
    assert scope == server.url + "/console/"
    console.assert_no_errors()

