"""Firebase Cloud Messaging, HTTP v1 API: ``POST {endpoint}/v1/projects/{project_id}/messages:send``.

Authentication is OAuth 2.0 with a service account (the JSON file Firebase gives): an RS256-signed JWT assertion
(``iss`` the account's e-mail, ``scope`` firebase.messaging, ``aud`` the account's ``token_uri``) is exchanged at
``token_uri`` for an access token, which is reused until five minutes before it expires. FCM's answers: 200 sent;
404 ``UNREGISTERED`` (and 400 naming an invalid registration token) the device is gone; 401 the access token is
refreshed and the push retried; 429 and 5xx retried with backoff.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from handoff.push.base import DELIVERED, EXPIRED, REJECTED, RETRY, Attempt, PushMessage, by_status, retry_after
from handoff.push.jws import sign_jwt
from handoff.settings import SettingsError
from handoff.store import DeviceRow

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class ServiceAccount:
    """The parts of a Firebase service-account JSON file the sender needs."""

    def __init__(self, path: Path) -> None:
        where = f"HANDOFF_FCM_SERVICE_ACCOUNT_FILE {path}"
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
            self.project_id: str = info["project_id"]
            self.client_email: str = info["client_email"]
            self.token_uri: str = info.get("token_uri") or "https://oauth2.googleapis.com/token"
            self.private_key_id: str | None = info.get("private_key_id")
            key = serialization.load_pem_private_key(info["private_key"].encode("ascii"), password=None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SettingsError(f"{where}: not a usable service-account file: {exc!r}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SettingsError(f"{where}: the private_key is not an RSA key")
        self.key = key


class FcmSender:
    """Pushes to FCM registration tokens (the device's ``subscription`` string)."""

    kind = "fcm"

    def __init__(self, account: ServiceAccount, endpoint: str, session: aiohttp.ClientSession,
                 timeout_s: float) -> None:
        self.account = account
        self.url = f"{endpoint.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: tuple[str, float] | None = None  # (access token, epoch seconds after which to refresh)
        self._token_lock = asyncio.Lock()

    async def access_token(self, *, refresh: bool = False) -> str:
        """An OAuth 2.0 access token for FCM, fetched once and shared by concurrent pushes."""
        async with self._token_lock:
            if self._token is not None and not refresh and time.time() < self._token[1]:
                return self._token[0]
            now = int(time.time())
            assertion = sign_jwt({"iss": self.account.client_email, "scope": SCOPE, "aud": self.account.token_uri,
                                  "iat": now, "exp": now + 3600}, self.account.key, kid=self.account.private_key_id)
            async with self.session.post(self.account.token_uri, data={"grant_type": GRANT_TYPE,
                                                                         "assertion": assertion},
                                         timeout=self.timeout) as response:
                body = await response.json(content_type=None)
                if response.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                    raise _TokenError(response.status, str(body)[:300])
            expires_in = float(body.get("expires_in", 3600))
            self._token = (str(body["access_token"]), time.time() + max(60.0, expires_in - 300))
            return self._token[0]

    def request_body(self, device: DeviceRow, message: PushMessage) -> dict[str, Any]:
        """The HTTP v1 ``message``: notification, data, and Android/Web Push delivery options."""
        high = message.urgency == "high"
        return {"message": {
            "token": device.subscription,
            "notification": {"title": message.title, "body": message.body},
            "data": message.data,
            "android": {"priority": "high" if high else "normal", "ttl": f"{message.ttl_s}s",
                        "collapse_key": message.short_topic()},
            "webpush": {"headers": {"Urgency": message.urgency, "TTL": str(message.ttl_s)}},
        }}

    async def send(self, device: DeviceRow, message: PushMessage) -> Attempt:
        body = self.request_body(device, message)
        try:
            for fresh in (False, True):
                token = await self.access_token(refresh=fresh)
                async with self.session.post(self.url, json=body, headers={"Authorization": f"Bearer {token}"},
                                             timeout=self.timeout) as response:
                    text = (await response.read())[:500].decode("utf-8", "replace")
                    status = response.status
                    after = retry_after(response.headers.get("Retry-After"))
                if status == 401 and not fresh:
                    continue  # the access token was revoked or expired early: fetch a new one, once
                outcome = by_status(status)
                if status == 400 and ("UNREGISTERED" in text or "registration token" in text.lower()):
                    outcome = EXPIRED
                return Attempt(outcome, status, None if outcome == DELIVERED else f"HTTP {status}: {text}", after)
            raise AssertionError("unreachable")  # pragma: no cover
        except _TokenError as exc:
            outcome = RETRY if exc.status == 429 or exc.status >= 500 else REJECTED
            return Attempt(outcome, exc.status, f"OAuth token endpoint answered HTTP {exc.status}: {exc.body}")
        except TimeoutError:
            return Attempt(RETRY, None, f"no answer within {self.timeout.total} s")
        except aiohttp.ClientError as exc:
            return Attempt(RETRY, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """The session belongs to the notifier."""


class _TokenError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
