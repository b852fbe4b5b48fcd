"""Local stand-ins for the push services the server talks to, written from their specifications, for tests and
benchmarks/notify.py. Nothing here imports the server's push code: each side is checked against the standards.

- :class:`LocalPushService`: what a browser vendor's Web Push service does (RFC 8030): it verifies the VAPID JWT
  (RFC 8292: ES256 signature with the key in ``k``, ``aud`` its own origin, ``exp`` within 24 hours, a ``sub``)
  against the server's published public key, and decrypts the aes128gcm payload (RFC 8291 / RFC 8188) with the
  subscription's private key and auth secret, generated exactly as a browser does (:class:`BrowserSubscription`).
  The decryption below is written from the RFCs with plain primitives, not with the server's library.
- :class:`LocalFcm`: FCM's HTTP v1 endpoint and Google's OAuth 2.0 token endpoint (RS256 JWT-bearer assertion).
- :class:`LocalApns`: APNs over HTTP/2 (h2c with prior knowledge, on the ``h2`` library), checking the ES256
  provider token and the request's headers and body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from local_http import serve_app

WAIT_S = 10.0


def b64d(text: str) -> bytes:
    text = "".join(text.split())
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class Refused(Exception):
    """The push service refuses the request (the message says why)."""


# -- Web Push ----------------------------------------------------------------------------------------------------
@dataclass
class BrowserSubscription:
    """A push subscription made as a browser makes one: a fresh P-256 key pair and 16 random bytes of auth secret
    (the Push API's ``p256dh`` and ``auth``), and the endpoint the push service handed out."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    server_key_b64: str | None = None  # the applicationServerKey it was made with (else the service's)

    def json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()``: what the browser sends to the server."""
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64e(_point(self.private_key.public_key())), "auth": b64e(self.auth)}}

    def decrypt(self, body: bytes) -> bytes:
        return decrypt_aes128gcm(body, self.private_key, self.auth)


def decrypt_aes128gcm(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """Decrypt a Web Push message body as the user agent does (RFC 8291 section 3.4, RFC 8188 section 2)."""
    if len(body) < 21:
        raise Refused("body shorter than the aes128gcm header")
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    if idlen != 65 or rs < 18:
        raise Refused(f"keyid must be the 65-byte application server key (got {idlen}), rs >= 18 (got {rs})")
    as_public_raw = body[21:86]
    as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public_raw)
    ecdh_secret = ua_private.exchange(ec.ECDH(), as_public)
    ua_public_raw = _point(ua_private.public_key())
    # RFC 8291 section 3.3: the auth secret and both public keys go into the input keying material.
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public_raw + as_public_raw + b"\x01")
    # RFC 8188 section 2.2-2.3: content-encryption key and nonce from the salt.
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    records = body[86:]
    chunks = [records[i:i + rs] for i in range(0, len(records), rs)]
    if not chunks:
        raise Refused("no encrypted record")
    out = b""
    for seq, chunk in enumerate(chunks):
        iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
        try:
            plain = AESGCM(cek).decrypt(iv, chunk, None)
        except Exception as exc:
            raise Refused(f"record {seq} does not decrypt: {type(exc).__name__}") from None
        plain = plain.rstrip(b"\x00")
        last = seq == len(chunks) - 1
        if not plain or plain[-1] != (2 if last else 1):
            raise Refused(f"record {seq} has a wrong padding delimiter")
        out += plain[:-1]
    return out


def verify_es256(token: str, public_key: ec.EllipticCurvePublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compact ES256 JWT's (header, claims), once its signature verifies; Refused otherwise."""
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header, claims, sig = json.loads(b64d(header_b64)), json.loads(b64d(claims_b64)), b64d(sig_b64)
    except ValueError as exc:
        raise Refused(f"not a compact JWT: {exc}") from None
    if header.get("alg") != "ES256" or len(sig) != 64:
        raise Refused(f"the JWT must be ES256 with a 64-byte signature, not {header.get('alg')!r}/{len(sig)}")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused("the JWT signature does not verify") from None
    return header, claims


def verify_vapid(authorization: str, server_key_b64: str, audience: str,
                 verified: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Check ``Authorization: vapid t=<JWT>, k=<key>`` as a push service does; returns the JWT's claims.

    ``verified`` caches the claims of tokens whose signature already verified (an application server reuses one
    token for many pushes, and push services remember it); ``aud``, ``exp`` and ``sub`` are checked every time.
    """
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise Refused(f"the Authorization scheme must be vapid (RFC 8292), not {scheme!r}")
    parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
    if "t" not in parts or "k" not in parts:
        raise Refused("vapid needs t= and k=")
    if parts["k"] != server_key_b64:
        raise Refused("k is not the application server key the subscription was made with")
    claims = verified.get((parts["t"], parts["k"])) if verified is not None else None
    if claims is None:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(parts["k"]))
        _, claims = verify_es256(parts["t"], key)
        if verified is not None:
            verified[(parts["t"], parts["k"])] = claims
    now = time.time()
    if claims.get("aud") != audience:
        raise Refused(f"aud {claims.get('aud')!r} is not this push service's origin {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
        raise Refused(f"exp {exp!r} must lie within the next 24 hours")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise Refused("sub must be a mailto: or https: contact")
    return claims


@dataclass
class PushReceived:
    """One push the local service accepted: its subscription, headers, VAPID claims and decrypted payload."""

    subscription: str
    headers: dict[str, str]
    claims: dict[str, Any]
    payload: dict[str, Any]
    decrypted_at: float  # time.monotonic(): CLOCK_MONOTONIC, comparable across processes on Linux
    arrived_at: float = 0.0  # when the request's body was read, before the gate, checks and decryption


class LocalPushService:
    """A Web Push service on 127.0.0.1: ``POST /push/<id>`` for each subscription it handed out.

    ``answers[id]`` lists the statuses to answer in turn (then 201); ``gone`` subscriptions answer 410; ``gate``
    holds every answer while cleared. A request that fails verification or decryption is answered 400/401/403 and
    recorded in ``refused`` (a test expects it empty).
    """

    def __init__(self) -> None:
        self.server_key_b64 = ""  # the server's VAPID public key, from its published endpoint
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.answers: dict[str, list[int]] = {}
        self.retry_after: dict[str, str] = {}
        self.received: list[PushReceived] = []
        self.requests: list[str] = []  # subscription ids in the order requests arrived
        self.refused: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.verified: dict[tuple[str, str], dict[str, Any]] = {}
        self.url = ""
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def subscribe(self, server_key_b64: str | None = None) -> BrowserSubscription:
        """A new subscription, as ``pushManager.subscribe({applicationServerKey})`` makes (default: the service's
        ``server_key_b64``, read when a push arrives)."""
        sub_id = uuid.uuid4().hex
        sub = BrowserSubscription(f"{self.url}/push/{sub_id}", server_key_b64=server_key_b64)
        self.subscriptions[sub_id] = sub
        return sub

    def sub_id(self, sub: BrowserSubscription) -> str:
        return sub.endpoint.rsplit("/", 1)[1]

    async def handle(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["sub_id"]
        body = await request.read()
        arrived = time.monotonic()
        self.requests.append(sub_id)
        await self.gate.wait()
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return web.Response(status=404, text="no such subscription")
        if len(body) > 4096:  # RFC 8030 section 7.2: at least 4096 bytes are taken; more may be refused
            self.refused.append((sub_id, f"body of {len(body)} bytes"))
            return web.Response(status=413, text="payload too large")
        plan = self.answers.get(sub_id)
        if plan:
            status = plan.pop(0)
            if status >= 300:
                headers = {"Retry-After": self.retry_after[sub_id]} if sub_id in self.retry_after else {}
                return web.Response(status=status, text=f"answering {status} as told", headers=headers)
        try:
            claims = verify_vapid(request.headers.get("Authorization", ""), sub.server_key_b64 or self.server_key_b64,
                                  self.url, self.verified)
            for name, want in (("Content-Encoding", "aes128gcm"),):
                if request.headers.get(name) != want:
                    raise Refused(f"{name} must be {want!r}")
            if not request.headers.get("TTL", "").isdigit():
                raise Refused("TTL (RFC 8030 section 5.2) is required")
            payload = json.loads(sub.decrypt(body))
        except Refused as exc:
            self.refused.append((sub_id, str(exc)))
            return web.Response(status=403 if "JWT" in str(exc) or "k is" in str(exc) else 400, text=str(exc))
        async with self._changed:
            self.received.append(PushReceived(sub_id, dict(request.headers), claims, payload, time.monotonic(),
                                              arrived))
            self._changed.notify_all()
        return web.Response(status=201, headers={"Location": f"{self.url}/message/{uuid.uuid4().hex}"})

    async def wait_for(self, count: int, where: Callable[[PushReceived], bool] = lambda _: True,
                       wait_s: float = WAIT_S) -> list[PushReceived]:
        """The first ``count`` received pushes satisfying ``where`` (waiting for them if need be)."""
        async def found() -> list[PushReceived]:
            async with self._changed:
                while True:
                    hits = [r for r in self.received if where(r)]
                    if len(hits) >= count:
                        return hits[:count]
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(found(), wait_s)
        except TimeoutError:
            raise AssertionError(f"{count} pushes did not arrive within {wait_s} s: received "
                                 f"{len(self.received)}, refused {self.refused}") from None

    async def start(self) -> LocalPushService:
        app = web.Application()
        app.router.add_post("/push/{sub_id}", self.handle)
        self._runner, self.url = await serve_app(app)
        return self

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()


# -- FCM HTTP v1 and Google's token endpoint ---------------------------------------------------------------------
class LocalFcm:
    """FCM's ``/v1/projects/<p>/messages:send`` and an OAuth 2.0 token endpoint on 127.0.0.1.

    The token endpoint verifies the RS256 assertion against the service account's public key; the send endpoint
    only accepts an access token it issued. Registration tokens in ``gone`` answer 404 UNREGISTERED.
    """

    scope = "https://www.googleapis.com/auth/firebase.messaging"

    def __init__(self, project_id: str = "handoff-test") -> None:
        self.project_id = project_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"push@{project_id}.iam.gserviceaccount.com"
        self.key_id = uuid.uuid4().hex
        self.issued: set[str] = set()
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.messages: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.refused: list[str] = []
        self.gone: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def service_account(self, path: Path) -> Path:
        """Write the service-account JSON a Firebase console would give, pointing at this endpoint."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode("ascii")
        path.write_text(json.dumps({"type": "service_account", "project_id": self.project_id,
                                    "private_key_id": self.key_id, "private_key": pem,
                                    "client_email": self.client_email, "token_uri": f"{self.url}/token"}))
        return path

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise Refused(f"grant_type {form.get('grant_type')!r}")
            header_b64, claims_b64, sig_b64 = str(form.get("assertion", "")).split(".")
            header, claims = json.loads(b64d(header_b64)), json.loads(b64d(claims_b64))
            if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
                raise Refused(f"assertion header {header}")
            self.key.public_key().verify(b64d(sig_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(),
                                         hashes.SHA256())
            now = time.time()
            if claims.get("iss") != self.client_email or claims.get("scope") != self.scope \
                    or claims.get("aud") != f"{self.url}/token" or not claims["iat"] - 60 <= now < claims["exp"] \
                    or claims["exp"] - claims["iat"] > 3600:
                raise Refused(f"assertion claims {claims}")
        except (Refused, ValueError, KeyError, InvalidSignature) as exc:
            self.refused.append(f"token: {exc!r}")
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.assertions.append((header, claims))
        access = uuid.uuid4().hex
        self.issued.add(access)
        return web.json_response({"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        scheme, _, access = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or access not in self.issued:
            self.refused.append("send: unknown access token")
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        if request.match_info["project"] != self.project_id:
            self.refused.append(f"send: project {request.match_info['project']}")
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        body = await request.json()
        self.messages.append((dict(request.headers), body))
        if body["message"]["token"] in self.gone:
            return web.json_response({"error": {"code": 404, "message": "Requested entity was not found.",
                                                "status": "NOT_FOUND", "details": [{
                                                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                    "errorCode": "UNREGISTERED"}]}}, status=404)
        return web.json_response({"name": f"projects/{self.project_id}/messages/{uuid.uuid4().hex}"})

    async def start(self) -> LocalFcm:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_post("/v1/projects/{project}/messages:send", self.send)
        self._runner, self.url = await serve_app(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- APNs over HTTP/2 --------------------------------------------------------------------------------------------
@dataclass
class ApnsRequest:
    headers: dict[str, str]
    body: dict[str, Any]
    token_header: dict[str, Any]
    token_claims: dict[str, Any]


class LocalApns:
    """APNs' ``POST /3/device/<token>`` over HTTP/2 cleartext (prior knowledge), on 127.0.0.1.

    Verifies the provider token (ES256 with the .p8 key's public half, ``kid``, ``iss`` = team, ``iat`` recent) and
    the required headers; device tokens in ``gone`` answer 410 Unregistered.
    """

    def __init__(self, team_id: str = "TEAM123456", key_id: str = "KEY1234567", topic: str = "com.example.handoff"):
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.requests: list[ApnsRequest] = []
        self.refused: list[str] = []
        self.gone: set[str] = set()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def p8(self, path: Path) -> Path:
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        return path

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        try:
            if headers.get(":method") != "POST" or not headers.get(":path", "").startswith("/3/device/"):
                raise Refused(f"{headers.get(':method')} {headers.get(':path')}")
            device = headers[":path"].rsplit("/", 1)[1]
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme != "bearer":
                raise Refused("authorization must be 'bearer <provider token>'")
            header, claims = verify_es256(token, self.key.public_key())
            if header.get("kid") != self.key_id or claims.get("iss") != self.team_id \
                    or not time.time() - 3600 < claims.get("iat", 0) <= time.time() + 5:
                raise Refused(f"provider token {header} {claims}")
            if headers.get("apns-topic") != self.topic or headers.get("apns-push-type") != "alert" \
                    or headers.get("apns-priority") not in ("5", "10") \
                    or not int(headers.get("apns-expiration", "0")) > time.time():
                raise Refused(f"headers {headers}")
            payload = json.loads(body)
            if not isinstance(payload.get("aps", {}).get("alert", {}).get("title"), str):
                raise Refused("aps.alert.title missing")
        except (Refused, ValueError, KeyError) as exc:
            self.refused.append(repr(exc))
            return 403, {"reason": "InvalidProviderToken"}
        self.requests.append(ApnsRequest(headers, payload, header, claims))
        if device in self.gone:
            return 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        return 200, None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h2.config
        import h2.connection
        import h2.events

        self._writers.add(writer)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65535):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers}, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, reply = self.answer(headers, bytes(body))
                        out = json.dumps(reply).encode() if reply is not None else b""
                        conn.send_headers(event.stream_id, [(":status", str(status)), ("apns-id", str(uuid.uuid4())),
                                                            ("content-length", str(len(out)))],
                                          end_stream=not out)
                        if out:
                            conn.send_data(event.stream_id, out, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> LocalApns:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
