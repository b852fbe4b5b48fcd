"""Apple Push Notification service, token-based authentication over HTTP/2: ``POST {endpoint}/3/device/{token}``.

The provider token is an ES256 JWT (header ``kid`` = the key id, claims ``iss`` = the team id and ``iat``) signed
with the .p8 key; Apple accepts one for an hour and refuses fresh ones more often than every 20 minutes, so it is
reused for 40 minutes. APNs speaks only HTTP/2: httpx with ``http2=True, http1=False`` (TLS with ALPN ``h2`` for
``https://``, prior-knowledge h2c for a local ``http://`` endpoint). Answers: 200 sent; 410 ``Unregistered`` and
400 ``BadDeviceToken``/``DeviceTokenNotForTopic`` the device is gone; 403 ``ExpiredProviderToken`` a new token and
one retry; 429 and 5xx retried with backoff.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from handoff.push.base import DELIVERED, EXPIRED, RETRY, Attempt, PushMessage, by_status, retry_after
from handoff.push.jws import sign_jwt
from handoff.settings import SettingsError
from handoff.store import DeviceRow

_TOKEN_REUSE_S = 40 * 60
_GONE = ("BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered")


def load_p8(path: Path) -> ec.EllipticCurvePrivateKey:
    """The APNs signing key (the .p8 file, a PEM P-256 key)."""
    where = f"HANDOFF_APNS_KEY_FILE {path}"
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(f"{where}: not a usable .p8 key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SettingsError(f"{where}: an APNs key is a P-256 key")
    return key


class ApnsSender:
    """Pushes to APNs device tokens (the device's ``subscription`` string, hex)."""

    kind = "apns"

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str, topic: str, endpoint: str,
                 timeout_s: float) -> None:
        self.key = key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.endpoint = endpoint.rstrip("/")
        self.client = httpx.AsyncClient(http1=False, http2=True, timeout=timeout_s)
        self._token: tuple[str, float] | None = None

    def provider_token(self, *, refresh: bool = False) -> str:
        now = time.time()
        if self._token is None or refresh or now - self._token[1] >= _TOKEN_REUSE_S:
            self._token = (sign_jwt({"iss": self.team_id, "iat": int(now)}, self.key, kid=self.key_id), now)
        return self._token[0]

    def request(self, device: DeviceRow, message: PushMessage) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL, headers (without authorization) and JSON body of one push."""
        headers = {"apns-topic": self.topic, "apns-push-type": "alert",
                   "apns-priority": "10" if message.urgency == "high" else "5",
                   "apns-expiration": str(int(time.time()) + message.ttl_s),
                   "apns-collapse-id": message.short_topic()}
        body = {"aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default",
                        "thread-id": message.data.get("conversation_id", "")}, **message.data}
        return f"{self.endpoint}/3/device/{device.subscription}", headers, body

    async def send(self, device: DeviceRow, message: PushMessage) -> Attempt:
        url, headers, body = self.request(device, message)
        content = json.dumps(body).encode("utf-8")
        try:
            for fresh in (False, True):
                response = await self.client.post(url, content=content, headers={
                    **headers, "authorization": f"bearer {self.provider_token(refresh=fresh)}"})
                reason = _reason(response)
                if response.status_code == 403 and reason == "ExpiredProviderToken" and not fresh:
                    continue
                outcome = by_status(response.status_code, expired=(410,))
                if response.status_code == 400 and reason in _GONE:
                    outcome = EXPIRED
                detail = reason or response.text[:200]
                error = None if outcome == DELIVERED else f"HTTP {response.status_code}: {detail}"
                return Attempt(outcome, response.status_code, error, retry_after(response.headers.get("retry-after")))
            raise AssertionError("unreachable")  # pragma: no cover
        except httpx.TimeoutException:
            return Attempt(RETRY, None, "no answer in time")
        except httpx.HTTPError as exc:
            return Attempt(RETRY, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self.client.aclose()


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("reason", "")) if isinstance(data, dict) else ""
