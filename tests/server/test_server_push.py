"""Push notifications with real protocols against local services, on SQLite and PostgreSQL.

Web Push is checked end to end: subscriptions are made as a browser makes them, the local push service verifies the
VAPID JWT against the server's published key and decrypts each payload with the subscription's own keys. FCM and
APNs cannot be reached from here: their tests are checks of the request format (and credentials) against local
endpoints built from the services' documentation.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from handoff.push.webpush import VAPID_SECRET
from handoff.settings import Settings, SettingsError
from handoff_testing import Agent, Server, StartServer, parts
from push_testing import BrowserSubscription, LocalApns, LocalFcm, LocalPushService, b64d, decrypt_aes128gcm

from copilot.live.protocol import EV_ESCALATION


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    service = await LocalPushService().start()
    yield service
    await service.stop()


async def subscribe(server: Server, service: LocalPushService, agent: Agent) -> tuple[BrowserSubscription, str]:
    """A browser subscription of ``agent`` registered with the server; returns it and its device id."""
    if not service.server_key_b64:
        service.server_key_b64 = (await server.expect("GET", "/push/vapid-public-key"))["public_key"]
    sub = service.subscribe()
    body = await server.expect("POST", "/agents/me/devices", agent.token, json={"kind": "webpush",
                                                                               "subscription": sub.json()})
    return sub, body["device_id"]


async def outcomes(server: Server, conversation_id: str, count: int) -> list[dict[str, Any]]:
    """The conversation's recorded push outcomes, once ``count`` of them are stored."""
    for _ in range(400):
        async with parts(server).store.read() as tx:
            rows = await tx.push_deliveries.of_conversation(conversation_id)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.025)
    raise AssertionError(f"only {len(rows)} push outcomes recorded for {conversation_id}, expected {count}")


def sample(server: Server, name: str, **labels: str) -> float:
    """One sample of the app's own metrics registry (the same numbers GET /metrics serves)."""
    value = parts(server).metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def test_the_local_decryptor_reads_the_rfc_8291_example() -> None:
    """The test's decryptor is itself checked: RFC 8291 section 5's message decrypts to its plaintext."""
    from cryptography.hazmat.primitives.asymmetric import ec

    ua_private = ec.derive_private_key(int.from_bytes(b64d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"),
                                       ec.SECP256R1())
    body = b64d("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tlz"
                "AC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    assert decrypt_aes128gcm(body, ua_private, b64d("BTBZMqHH6r4Tts7J_aSIgg")) == \
        b"When I grow up, I want to be a watermelon"


async def test_webpush_reaches_every_device_of_the_bots_agents(server: Server,
                                                              push_service: LocalPushService) -> None:
    bot, other_bot = await server.bot(), await server.bot()
    alice = await server.agent(bot, name="Alice")
    bob = await server.agent(bot, other_bot, name="Bob")
    carol = await server.agent(other_bot, name="Carol")  # not registered for the escalating bot
    alice_phone, alice_phone_id = await subscribe(server, push_service, alice)
    alice_laptop, _ = await subscribe(server, push_service, alice)
    bob_phone, _ = await subscribe(server, push_service, bob)
    carol_phone, _ = await subscribe(server, push_service, carol)
    again = await server.expect("POST", "/agents/me/devices", alice.token,
                                json={"kind": "webpush", "subscription": alice_phone.json()})
    assert again["device_id"] == alice_phone_id  # the same subscription again is the same device

    alice_c = await server.client(alice.token)
    cid, _ = await server.conversation(bot)
    ack = await server.escalate(bot, cid, reason="asks for a human",
                                transcript=[{"role": "customer", "text": "my card was swallowed by the ATM"}])
    assert ack["status"] == "waiting"
    assert (await alice_c.wait_for(EV_ESCALATION))["conversation_id"] == cid

    got = await push_service.wait_for(3)
    assert push_service.refused == []
    by_sub = {r.subscription: r for r in got}
    assert set(by_sub) == {push_service.sub_id(s) for s in (alice_phone, alice_laptop, bob_phone)}
    assert push_service.sub_id(carol_phone) not in push_service.requests
    for received in got:
        assert received.claims["aud"] == push_service.url and received.claims["sub"] == "mailto:handoff@localhost"
        assert received.headers["Urgency"] == "high" and received.headers["TTL"] == "120"
        assert len(received.headers["Topic"]) == 32
        payload = received.payload
        assert payload["title"] == "Test bot: a customer is waiting"
        assert payload["body"] == "my card was swallowed by the ATM"
        assert payload["tag"] == f"handoff:{cid}"
        assert payload["data"] == {"type": "escalation", "conversation_id": cid, "bot_id": bot.bot_id,
                                   "seq": str(ack["seq"]), "renotify": "0", "waiting_since": payload["data"][
                                       "waiting_since"], "reason": "asks for a human",
                                   "preview": "my card was swallowed by the ATM"}
    rows = await outcomes(server, cid, 3)
    assert sorted(r["outcome"] for r in rows) == ["delivered"] * 3 and all(r["attempts"] == 1 for r in rows)
    assert sample(server, "handoff_pushes_sent_total", kind="webpush") == 3


async def test_pushes_never_delay_the_escalation_or_its_event(server: Server,
                                                             push_service: LocalPushService) -> None:
    bot = await server.bot()
    agents = [await server.agent(bot) for _ in range(3)]
    for agent in agents:
        await subscribe(server, push_service, agent)
    clients = [await server.client(a.token) for a in agents]
    push_service.gate.clear()  # the push service takes the requests and answers none of them for now
    cid, _ = await server.conversation(bot)
    ack = await server.escalate(bot, cid)
    for client in clients:
        await client.wait_for(EV_ESCALATION, lambda e: e["conversation_id"] == cid)
    # The ack and every in-app event came while the pushes hang at the push service: their requests arrive, no
    # answer comes, and no outcome is stored until the gate opens.
    assert ack["status"] == "waiting"
    for _ in range(200):
        if len(push_service.requests) == 3:
            break
        await asyncio.sleep(0.025)
    assert len(push_service.requests) == 3 and push_service.received == []
    async with parts(server).store.read() as tx:
        assert await tx.push_deliveries.of_conversation(cid) == []
    push_service.gate.set()
    await push_service.wait_for(3)
    assert {r["outcome"] for r in await outcomes(server, cid, 3)} == {"delivered"}


async def test_expired_devices_are_removed_and_busy_services_retried(start_server: StartServer,
                                                                     push_service: LocalPushService) -> None:
    server = await start_server(push_backoff_s=0.05, push_max_attempts=3)
    bot = await server.bot()
    agent = await server.agent(bot)
    subs = {name: await subscribe(server, push_service, agent)
            for name in ("busy", "throttled", "gone", "unknown", "bad", "down")}
    ids = {name: push_service.sub_id(sub) for name, (sub, _) in subs.items()}
    push_service.answers = {ids["busy"]: [503], ids["throttled"]: [429], ids["gone"]: [410], ids["unknown"]: [404],
                            ids["bad"]: [400], ids["down"]: [502, 503, 504, 500]}
    push_service.retry_after[ids["throttled"]] = "0"
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid)

    rows = {r["device_id"]: r for r in await outcomes(server, cid, 6)}
    by_name = {name: rows[device_id] for name, (_, device_id) in subs.items()}
    assert {n: (r["outcome"], r["attempts"], r["status"]) for n, r in by_name.items()} == {
        "busy": ("delivered", 2, 201), "throttled": ("delivered", 2, 201), "gone": ("expired", 1, 410),
        "unknown": ("expired", 1, 404), "bad": ("rejected", 1, 400), "down": ("gave_up", 3, 504)}
    assert "HTTP 410" in by_name["gone"]["error"]
    left = {d["device_id"] for d in (await server.expect("GET", "/agents/me/devices", agent.token))["devices"]}
    assert left == {subs[n][1] for n in ("busy", "throttled", "bad", "down")}
    assert sample(server, "handoff_pushes_sent_total", kind="webpush") == 2
    assert sample(server, "handoff_pushes_failed_total", kind="webpush", reason="expired") == 2
    assert sample(server, "handoff_pushes_failed_total", kind="webpush", reason="rejected") == 1
    assert sample(server, "handoff_pushes_failed_total", kind="webpush", reason="gave_up") == 1
    assert sample(server, "handoff_push_retries_total", kind="webpush") == 4  # busy 1, throttled 1, down 2
    assert push_service.refused == []


async def test_devices_are_listed_and_removed_by_their_agent_only(server: Server,
                                                                  push_service: LocalPushService) -> None:
    bot = await server.bot()
    alice, bob = await server.agent(bot), await server.agent(bot)
    sub, device_id = await subscribe(server, push_service, alice)
    fcm = await server.expect("POST", "/agents/me/devices", alice.token, json={"kind": "fcm", "subscription": "tok"})
    listed = (await server.expect("GET", "/agents/me/devices", alice.token))["devices"]
    assert {(d["device_id"], d["kind"]) for d in listed} == {(device_id, "webpush"), (fcm["device_id"], "fcm")}
    webpush_row = next(d for d in listed if d["kind"] == "webpush")
    assert webpush_row["endpoint_origin"] == push_service.url and "keys" not in json.dumps(listed)

    status, body = await server.request("DELETE", f"/agents/me/devices/{device_id}", bob.token)
    assert status == 404 and body["error"]["code"] == "not_found"  # someone else's device does not exist for Bob
    status, body = await server.request("DELETE", f"/agents/me/devices/{device_id}", bot.api_key)
    assert status == 403
    assert (await server.expect("DELETE", f"/agents/me/devices/{device_id}", alice.token))["removed"] is True
    status, _ = await server.request("DELETE", f"/agents/me/devices/{device_id}", alice.token)
    assert status == 404
    assert [d["kind"] for d in (await server.expect("GET", "/agents/me/devices", alice.token))["devices"]] == ["fcm"]

    keys = sub.json()["keys"]
    for bad in ({"kind": "webpush", "subscription": {**sub.json(), "endpoint": "ftp://x/y"}},
                {"kind": "webpush", "subscription": {**sub.json(), "extra": 1}},
                {"kind": "webpush", "subscription": {**sub.json(), "keys": {**keys, "auth": keys["auth"][:-4]}}},
                {"kind": "webpush", "subscription": {**sub.json(), "keys": {**keys, "p256dh": "B" + "A" * 86}}},
                {"kind": "carrier-pigeon", "subscription": "x"}):
        status, body = await server.request("POST", "/agents/me/devices", alice.token, json=bad)
        assert status == 400 and body["error"]["code"] == "invalid_payload"

    # A removed device gets no push.
    cid, _ = await server.conversation(bot)
    await server.escalate(bot, cid)
    rows = await outcomes(server, cid, 1)
    assert [(r["kind"], r["outcome"]) for r in rows] == [("fcm", "skipped")]
    assert push_service.requests == []


async def test_fcm_request_format_against_local_endpoint(start_server: StartServer, tmp_path: Path) -> None:
    """FCM HTTP v1 is out of reach: a local endpoint checks the OAuth assertion, the bearer token and the message."""
    fcm = await LocalFcm().start()
    try:
        server = await start_server(fcm_service_account_file=fcm.service_account(tmp_path / "account.json"),
                                    fcm_endpoint=fcm.url)
        bot = await server.bot()
        agent = await server.agent(bot)
        live = await server.expect("POST", "/agents/me/devices", agent.token,
                                   json={"kind": "fcm", "subscription": "fcm-token-live"})
        gone = await server.expect("POST", "/agents/me/devices", agent.token,
                                   json={"kind": "fcm", "subscription": "fcm-token-gone"})
        fcm.gone.add("fcm-token-gone")
        cid, _ = await server.conversation(bot)
        await server.escalate(bot, cid, transcript=[{"role": "customer", "text": "where is my parcel?"}])
        rows = {r["device_id"]: r for r in await outcomes(server, cid, 2)}
        assert rows[live["device_id"]]["outcome"] == "delivered" and rows[gone["device_id"]]["outcome"] == "expired"
        assert fcm.refused == [] and len(fcm.assertions) == 1  # one access token serves both pushes
        by_token = {body["message"]["token"]: body["message"] for _, body in fcm.messages}
        message = by_token["fcm-token-live"]
        assert message["notification"] == {"title": "Test bot: a customer is waiting", "body": "where is my parcel?"}
        assert message["data"]["conversation_id"] == cid and all(isinstance(v, str) for v in message["data"].values())
        assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "120s"
        assert message["webpush"]["headers"] == {"Urgency": "high", "TTL": "120"}
        remaining = (await server.expect("GET", "/agents/me/devices", agent.token))["devices"]
        assert [d["device_id"] for d in remaining] == [live["device_id"]]
        assert sample(server, "handoff_pushes_sent_total", kind="fcm") == 1
    finally:
        await fcm.stop()


async def test_apns_request_format_against_local_http2_endpoint(start_server: StartServer, tmp_path: Path) -> None:
    """APNs is out of reach: a local HTTP/2 (h2c) endpoint checks the ES256 provider token, headers and body."""
    apns = await LocalApns().start()
    try:
        server = await start_server(apns_key_file=apns.p8(tmp_path / "AuthKey.p8"), apns_key_id=apns.key_id,
                                    apns_team_id=apns.team_id, apns_topic=apns.topic, apns_endpoint=apns.url)
        bot = await server.bot()
        agent = await server.agent(bot)
        tokens = {"live": "a1" * 32, "gone": "b2" * 32}
        devices = {name: (await server.expect("POST", "/agents/me/devices", agent.token,
                                              json={"kind": "apns", "subscription": token}))["device_id"]
                   for name, token in tokens.items()}
        apns.gone.add(tokens["gone"])
        cid, _ = await server.conversation(bot)
        await server.escalate(bot, cid, reason="refund over the limit")
        rows = {r["device_id"]: r for r in await outcomes(server, cid, 2)}
        assert rows[devices["live"]]["outcome"] == "delivered" and rows[devices["gone"]]["outcome"] == "expired"
        assert apns.refused == [] and len(apns.requests) == 2
        request = next(r for r in apns.requests if r.headers[":path"] == f"/3/device/{tokens['live']}")
        assert request.headers[":scheme"] == "http" and request.headers["apns-priority"] == "10"
        assert request.headers["apns-push-type"] == "alert" and request.headers["apns-topic"] == apns.topic
        assert len(request.headers["apns-collapse-id"]) <= 64
        assert request.token_header == {"alg": "ES256", "typ": "JWT", "kid": apns.key_id}
        assert request.body["aps"]["alert"] == {"title": "Test bot: a customer is waiting",
                                                "body": "refund over the limit"}
        assert request.body["conversation_id"] == cid and request.body["aps"]["thread-id"] == cid
        assert sample(server, "handoff_pushes_sent_total", kind="apns") == 1
        assert sample(server, "handoff_pushes_failed_total", kind="apns", reason="expired") == 1
    finally:
        await apns.stop()


async def test_the_vapid_key_is_generated_once_and_kept(start_server: StartServer, tmp_path: Path) -> None:
    first = await start_server()
    key = (await first.expect("GET", "/push/vapid-public-key"))["public_key"]
    assert len(b64d(key)) == 65 and b64d(key)[0] == 4  # an uncompressed P-256 point, as applicationServerKey
    async with parts(first).store.read() as tx:
        assert "PRIVATE KEY" in str(await tx.secrets.get(VAPID_SECRET))
    second = await start_server()  # another process on the same database, or a restart
    assert (await second.expect("GET", "/push/vapid-public-key"))["public_key"] == key

    key_file = tmp_path / "keys" / "vapid.pem"
    from_file = await start_server(vapid_key_file=key_file)
    file_key = (await from_file.expect("GET", "/push/vapid-public-key"))["public_key"]
    assert file_key != key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = await start_server(vapid_key_file=key_file)
    assert (await again.expect("GET", "/push/vapid-public-key"))["public_key"] == file_key

    raw = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"  # RFC 8291's example key, as a raw base64url scalar
    given = await start_server(vapid_private_key=raw)
    assert (await given.expect("GET", "/push/vapid-public-key"))["public_key"] == \
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
    with pytest.raises(SettingsError, match="HANDOFF_VAPID_PRIVATE_KEY"):
        await start_server(vapid_private_key="not a key")



def test_push_and_ladder_settings_name_the_bad_variable(tmp_path: Path) -> None:
    settings = Settings.from_env({"HANDOFF_LADDER_RENOTIFY_AFTER_S": "off", "HANDOFF_LADDER_FALLBACK_AFTER_S": "90",
                                  "HANDOFF_PUSH_TTL_S": "60", "HANDOFF_VAPID_KEY_FILE": str(tmp_path / "v.pem")})
    assert settings.ladder_renotify_after_s is None and settings.ladder_fallback_after_s == 90.0
    assert settings.push_ttl_s == 60 and settings.vapid_key_file == tmp_path / "v.pem"
    for env, name in (({"HANDOFF_LADDER_WAIT_NOTICE_AFTER_S": "later"}, "HANDOFF_LADDER_WAIT_NOTICE_AFTER_S"),
                      ({"HANDOFF_LADDER_RENOTIFY_AFTER_S": "-5"}, "HANDOFF_LADDER_RENOTIFY_AFTER_S"),
                      ({"HANDOFF_PUSH_URGENCY": "urgent"}, "HANDOFF_PUSH_URGENCY"),
                      ({"HANDOFF_VAPID_SUBJECT": "admin@example.com"}, "HANDOFF_VAPID_SUBJECT"),
                      ({"HANDOFF_APNS_KEY_ID": "K"}, "HANDOFF_APNS_TOPIC"),
                      ({"HANDOFF_PUSH_MAX_ATTEMPTS": "0"}, "HANDOFF_PUSH_MAX_ATTEMPTS")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(env)


def test_a_long_escalation_still_fits_a_push() -> None:
    """Push services take about 4 KB: four-byte characters in every free-text field are shortened to fit."""
    from handoff.notify import EscalationNotice
    from handoff.push import message_for
    from handoff.push.webpush import encrypt

    sub = BrowserSubscription("https://push.example/x")
    wide = "\N{GRINNING FACE}" * 200
    notice = EscalationNotice("c" * 200, "b" * 200, wide * 5, wide, "2025-01-01T00:00:00.000Z", 7, bot_name=wide)
    message = message_for(notice, 120, "high")
    body = encrypt(sub.json(), message.web_payload_bytes())
    assert len(body) <= 4096
    payload = json.loads(sub.decrypt(body))
    assert payload["data"]["conversation_id"] == "c" * 200 and payload["body"].startswith("\N{GRINNING FACE}")
    short = message_for(EscalationNotice("c1", "b1", "why", "hi", "2025-01-01T00:00:00.000Z", 3), 120, "high")
    assert short.body == "hi" and short.data["reason"] == "why"  # short ones are left whole
