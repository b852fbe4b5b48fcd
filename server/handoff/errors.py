"""The one error type of the server: a protocol error code, a message for people, and optional extra fields.

The service raises it; the Socket.IO namespace turns it into ``{"ok": false, "error": {...}}`` and the HTTP API
into ``{"error": {...}}`` with the status of ``copilot.live.protocol.HTTP_STATUS``. A refused request changes nothing:
every raise happens before a transaction commits, or rolls it back.
"""

from __future__ import annotations

from typing import Any

from copilot.live.protocol import ERROR_CODES, HTTP_STATUS


class HandoffError(Exception):
    """A refused request.

    Args:
        code: one of ``copilot.live.protocol.ERROR_CODES``.
        message: what went wrong, for the person reading the client's log.
        extra: more fields for the error object (e.g. ``claimed_by`` for ``already_claimed``).
    """

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def as_error(self) -> dict[str, Any]:
        """The ``error`` object of the wire protocol."""
        return {"code": self.code, "message": self.message, **self.extra}

    def __repr__(self) -> str:
        return f"HandoffError({self.code!r}, {self.message!r})"
