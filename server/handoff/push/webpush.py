"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291), using pywebpush's parts.

The payload is encrypted by ``http_ece`` (pywebpush's encryption layer: an ephemeral P-256 key per push, ECDH with
the subscription's ``p256dh`` key, HKDF with its ``auth`` secret, one aes128gcm record); the VAPID JWT is signed by
``py_vapid``
(ES256, ``aud`` = the push service's origin, ``exp`` 12 hours ahead, ``sub`` the operator's contact) and reused per
origin for an hour. The request goes out on the app's shared aiohttp session, so pushes to one push service reuse
connections.

The VAPID key pair comes from ``HANDOFF_VAPID_PRIVATE_KEY``, else from ``HANDOFF_VAPID_KEY_FILE`` (generated there
when absent), else from the database (generated and stored on first start), so that every process of a
deployment, and every restart, signs with the key the browsers subscribed with.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException

from handoff.push.base import DELIVERED, RETRY, Attempt, PushMessage, by_status, retry_after
from handoff.push.jws import b64url, b64url_decode
from handoff.settings import Settings, SettingsError
from handoff.store import DeviceRow, IntegrityError, Store, Tx

log = logging.getLogger(__name__)

VAPID_SECRET = "vapid_private_key"
_JWT_LIFETIME_S = 12 * 3600  # RFC 8292: at most 24 hours
_JWT_REUSE_S = 3600


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def parse_vapid_key(text: str, where: str) -> Vapid02:
    """A VAPID key from PEM text or a raw base64url P-256 scalar; SettingsError naming ``where`` otherwise."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("not a P-256 (prime256v1) key")
            return Vapid02(key)
        return Vapid02.from_string(text.strip())
    except (ValueError, TypeError, VapidException) as exc:
        raise SettingsError(f"{where}: not a usable VAPID private key (P-256, PEM or raw base64url): {exc}") from None


def _generate() -> Vapid02:
    return Vapid02(ec.generate_private_key(ec.SECP256R1()))


async def load_vapid(settings: Settings, store: Store) -> Vapid02:
    """The deployment's VAPID key pair (see the module's docstring for where it comes from)."""
    if settings.vapid_private_key:
        return parse_vapid_key(settings.vapid_private_key, "HANDOFF_VAPID_PRIVATE_KEY")
    if settings.vapid_key_file is not None:
        return _from_file(Path(settings.vapid_key_file))

    async def read(tx: Tx) -> str | None:
        return await tx.secrets.get(VAPID_SECRET)

    async with store.read() as tx:
        stored = await read(tx)
    if stored is None:
        fresh = _pem(_generate().private_key)
        try:
            await store.write(lambda tx: tx.secrets.insert(VAPID_SECRET, fresh))
            log.info("generated the VAPID key pair and stored it in the database")
        except IntegrityError:
            pass  # another process starting at the same time stored its key first: use that one
        async with store.read() as tx:
            stored = await read(tx)
        assert stored is not None
    return parse_vapid_key(stored, "the database's VAPID key")


def _from_file(path: Path) -> Vapid02:
    where = f"HANDOFF_VAPID_KEY_FILE {path}"
    try:
        return parse_vapid_key(path.read_text(encoding="ascii"), where)
    except FileNotFoundError:
        pass
    vapid = _generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    except FileExistsError:  # another process wrote it meanwhile
        return parse_vapid_key(path.read_text(encoding="ascii"), where)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(_pem(vapid.private_key))
    log.info("generated the VAPID key pair in %s", path)
    return vapid


def public_key_b64(vapid: Vapid02) -> str:
    """The public key as browsers take it (``applicationServerKey``): the uncompressed point, base64url."""
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(raw)


def encrypt(subscription: dict[str, Any], data: bytes) -> bytes:
    """The aes128gcm body of one push to ``subscription`` (RFC 8291), with a fresh application-server key pair."""
    keys = subscription["keys"]
    return bytes(http_ece.encrypt(data, salt=None, private_key=ec.generate_private_key(ec.SECP256R1()),
                                  dh=b64url_decode(keys["p256dh"]), auth_secret=b64url_decode(keys["auth"]),
                                  version="aes128gcm"))


class WebPushSender:
    """Pushes to Web Push subscriptions (``{endpoint, keys: {p256dh, auth}}``)."""

    kind = "webpush"

    def __init__(self, vapid: Vapid02, subject: str, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self.vapid = vapid
        self.subject = subject
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tokens: dict[str, tuple[str, float]] = {}  # origin -> (Authorization header, when signed)

    def authorization(self, endpoint: str) -> str:
        """``vapid t=<JWT>, k=<public key>`` for the endpoint's origin (RFC 8292 section 3)."""
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(origin)
        if cached is not None and now - cached[1] < _JWT_REUSE_S:
            return cached[0]
        header = self.vapid.sign({"aud": origin, "sub": self.subject, "exp": int(now) + _JWT_LIFETIME_S})
        value = str(header["Authorization"])
        self._tokens[origin] = (value, now)
        return value

    async def send(self, device: DeviceRow, message: PushMessage) -> Attempt:
        subscription = device.subscription
        endpoint = str(subscription["endpoint"])
        body = encrypt(subscription, message.web_payload_bytes())
        headers = {"Authorization": self.authorization(endpoint), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "TTL": str(message.ttl_s),
                   "Urgency": message.urgency, "Topic": message.short_topic()}
        try:
            async with self.session.post(endpoint, data=body, headers=headers, timeout=self.timeout) as response:
                text = (await response.read())[:300].decode("utf-8", "replace")
                outcome = by_status(response.status)
                error = None if outcome == DELIVERED else f"HTTP {response.status}: {text}".strip()
                return Attempt(outcome, response.status, error, retry_after(response.headers.get("Retry-After")))
        except TimeoutError:
            return Attempt(RETRY, None, f"no answer within {self.timeout.total} s")
        except aiohttp.ClientError as exc:
            return Attempt(RETRY, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """The session belongs to the notifier."""
