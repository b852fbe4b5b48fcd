"""How fast the agent console and the customer widget are, in a real headless Chromium against ``handoff serve``.

In one run, on this machine (the server in its own process, Debian's Chromium driven by Playwright):
- load: from navigation to "signed in, connected, queue of N waiting conversations shown" (console) and to "status
  line shown" (widget), with the bytes the page transferred, each in a fresh browser context (a cold cache);
  baselines: the same browser navigating to a tiny JSON answer (/api/v1/healthz) in a fresh context (the browser's
  own floor), and a python-socketio client connecting and reading the same queue over HTTP;
- live message: a customer message (sent by a python-socketio client) until its text is in the console's DOM;
  baseline: the same message's arrival at a python-socketio agent client subscribed to the same conversation;
- long transcript: clicking a conversation of M stored events until its last message is shown; baseline: a
  python-socketio client's ``resume`` of the same conversation.
Printed: milliseconds (p50/p95 where repeated) and ratios page/baseline from the same run.

    .venv/bin/python benchmarks/pages.py [--waiting 50] [--messages 60] [--transcript 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from tqdm import tqdm

NAMESPACE = "/handoff"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
CHROMIUM = os.environ.get("HANDOFF_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

# Records when each message's text enters the console's transcript (epoch ms, sub-millisecond).
DOM_CLOCK = """
window.__shown = {};
new MutationObserver((changes) => {
  const now = performance.timeOrigin + performance.now();
  for (const change of changes) for (const node of change.addedNodes) {
    if (node.classList && node.classList.contains("msg")) window.__shown[node.childNodes[1].textContent] = now;
  }
}).observe(document.getElementById("transcript"), { childList: true });
"""


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


class Api:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url + "/api/v1", http

    async def __call__(self, method: str, path: str, token: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + path, json=body,
                                     headers={"Authorization": f"Bearer {token}"}) as response:
            data = await response.json()
            assert response.status == 200, (path, response.status, data)
            return data


async def sio_client(url: str, token: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token}, namespaces=[NAMESPACE], transports=["websocket"])
    return client


async def call(client: socketio.AsyncClient, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    ack = await client.call(event, payload, namespace=NAMESPACE, timeout=30)
    assert ack["ok"], (event, ack)
    return ack


async def run(url: str, args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    async with aiohttp.ClientSession() as http, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await measure(url, Api(url, http), browser, args)
        finally:
            await browser.close()


async def measure(url: str, api: Api, browser: Any, args: argparse.Namespace) -> None:
    bot = await api("POST", "/bots", ADMIN_KEY, {"bot_id": "bench-bot", "name": "Bench"})
    agent = await api("POST", "/agents", ADMIN_KEY, {"agent_id": "ada", "name": "Ada", "bots": ["bench-bot"]})
    for i in tqdm(range(args.waiting), desc="waiting conversations", leave=False):
        c = await api("POST", "/bots/bench-bot/conversations", bot["api_key"], {})
        await api("POST", f"/conversations/{c['conversation_id']}/escalate", bot["api_key"],
                  {"transcript": [{"role": "customer", "text": f"question {i}"}]})
    live = await api("POST", "/bots/bench-bot/conversations", bot["api_key"], {})
    long = await api("POST", "/bots/bench-bot/conversations", bot["api_key"], {})
    turns = [{"role": "customer" if i % 2 == 0 else "bot", "text": f"turn {i}: " + "words " * 8}
             for i in range(args.transcript - 1)]
    await api("POST", f"/conversations/{long['conversation_id']}/escalate", bot["api_key"], {"transcript": turns})

    # -- load -------------------------------------------------------------------------------------------------
    loads, baselines, floors, sizes = [], [], [], []
    for _ in tqdm(range(args.loads), desc="page loads", leave=False):
        context = await browser.new_context()
        page = await context.new_page()
        started = time.perf_counter()
        await page.goto(f"{url}/api/v1/healthz")
        floors.append((time.perf_counter() - started) * 1000)
        await context.close()
        started = time.perf_counter()
        client = await sio_client(url, agent["token"])
        queue = await api("GET", "/conversations?status=waiting", agent["token"])
        baselines.append((time.perf_counter() - started) * 1000)
        assert len(queue["conversations"]) >= args.waiting
        await client.disconnect()
        context = await browser.new_context()
        page = await context.new_page()
        started = time.perf_counter()
        await page.goto(f"{url}/console/#token={agent['token']}")
        # (Locator waits: the pages' Content-Security-Policy forbids the eval behind wait_for_function.)
        await page.locator("#queue li").nth(args.waiting).wait_for()
        await page.locator("#connection", has_text="Connected").wait_for()
        loads.append((time.perf_counter() - started) * 1000)
        sizes.append(await page.evaluate(
            "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".reduce((n, e) => n + e.encodedBodySize, 0)"))
        await context.close()
    widget_context = await browser.new_context()
    widget = await widget_context.new_page()
    started = time.perf_counter()
    await widget.goto(f"{url}/widget/#token={live['customer_token']}")
    await widget.locator("#status", has_text="assistant").wait_for()
    widget_ms = (time.perf_counter() - started) * 1000
    widget_bytes = await widget.evaluate(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".reduce((n, e) => n + e.encodedBodySize, 0)")
    await widget_context.close()

    # -- live messages: customer -> console DOM vs customer -> python agent client --------------------------------
    cid = live["conversation_id"]
    await api("POST", f"/conversations/{cid}/escalate", bot["api_key"], {})
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{url}/console/#token={agent['token']}")
    await page.locator(f'#queue li[data-conversation="{cid}"] button').click()
    await page.get_by_role("button", name="Claim").click()
    await page.locator("#composer").wait_for()
    await page.evaluate(DOM_CLOCK)
    customer = await sio_client(url, live["customer_token"])
    reader = await sio_client(url, agent["token"])
    arrived: dict[str, float] = {}
    reader.on("message", lambda e: arrived.setdefault(e["text"], time.time() * 1000), namespace=NAMESPACE)
    await call(reader, "join", {"conversation_id": cid})
    sent: dict[str, float] = {}
    for i in tqdm(range(args.messages), desc="live messages", leave=False):
        text = f"live message {i}"
        sent[text] = time.time() * 1000
        await call(customer, "message", {"conversation_id": cid, "client_id": f"m{i}", "text": text})
        await asyncio.sleep(0.06)  # under the connection's rate limit, and one message at a time on screen
    await page.evaluate("(n) => new Promise((done) => { const check = () => Object.keys(window.__shown).length >= n "
                        "? done() : setTimeout(check, 20); check(); })", args.messages)
    shown: dict[str, float] = await page.evaluate("window.__shown")
    dom_ms = [shown[t] - sent[t] for t in sent]
    client_ms = [arrived[t] - sent[t] for t in sent]
    await customer.disconnect()
    await reader.disconnect()

    # -- a long transcript -------------------------------------------------------------------------------------
    opens, resumes = [], []
    long_cid = long["conversation_id"]
    for _ in tqdm(range(args.loads), desc="long transcript", leave=False):
        client = await sio_client(url, agent["token"])
        started = time.perf_counter()
        ack = await call(client, "resume", {"conversation_id": long_cid, "after_seq": 0})
        resumes.append((time.perf_counter() - started) * 1000)
        assert len(ack["events"]) == args.transcript
        await client.disconnect()
        await page.reload()
        await page.locator("#connection", has_text="Connected").wait_for()
        started = time.perf_counter()
        await page.locator(f'#queue li[data-conversation="{long_cid}"] button').click()
        await page.locator("#transcript li").nth(args.transcript - 1).wait_for()
        opens.append((time.perf_counter() - started) * 1000)
    await context.close()

    med = statistics.median
    print(f"console load ({args.waiting} waiting): {med(loads):.0f} ms median of {args.loads} "
          f"(baselines: a tiny page in a fresh context {med(floors):.0f} ms, ratio {med(loads) / med(floors):.1f}x; "
          f"python connect + queue {med(baselines):.0f} ms); {med(sizes) / 1024:.0f} KiB transferred")
    print(f"widget load: {widget_ms:.0f} ms (ratio to the tiny page {widget_ms / med(floors):.1f}x); "
          f"{widget_bytes / 1024:.0f} KiB transferred")
    print(f"live message to the console's screen: p50 {pct(dom_ms, 0.5):.1f} ms, p95 {pct(dom_ms, 0.95):.1f} ms "
          f"(baseline python agent client: p50 {pct(client_ms, 0.5):.1f} ms, p95 {pct(client_ms, 0.95):.1f} ms; "
          f"ratio p50 {pct(dom_ms, 0.5) / pct(client_ms, 0.5):.1f}x)")
    print(f"opening a {args.transcript}-event conversation: {med(opens):.0f} ms median "
          f"(baseline python resume: {med(resumes):.0f} ms; ratio {med(opens) / med(resumes):.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=50, help="waiting conversations in the queue")
    parser.add_argument("--messages", type=int, default=60, help="live messages timed to the screen")
    parser.add_argument("--transcript", type=int, default=1000, help="events in the long conversation")
    parser.add_argument("--loads", type=int, default=5, help="repetitions of the load measurements")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set HANDOFF_TEST_CHROMIUM)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HANDOFF_DATABASE_URL": f"sqlite:///{Path(tmp) / 'pages.db'}",
               "HANDOFF_ADMIN_KEY": ADMIN_KEY, "HANDOFF_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "handoff", "serve", "--port", "0"], stdout=subprocess.PIPE,
                                  text=True, env=env)
        try:
            assert server.stdout is not None
            match = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline())
            assert match, "handoff serve did not start"
            asyncio.run(run(match.group(0), args))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
