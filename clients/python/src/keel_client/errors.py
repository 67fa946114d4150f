"""Errors raised by the client: one class per kind of answer the server gives."""

from __future__ import annotations

from typing import Any, Dict, Optional


class KeelError(Exception):
    """A request Keel answered with an error (or could not be sent).

    ``status`` is the HTTP status (0 when the server could not be reached), ``message`` the
    server's ``error`` text and ``field`` the request field it names, when it names one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: Optional[str] = None,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.status = status
        self.message = message
        self.field = field
        self.body: Dict[str, Any] = body or {}
        where = f" (field {field})" if field else ""
        super().__init__(f"{status}: {message}{where}" if status else message)


class BadRequest(KeelError):
    """400: a malformed body or an out-of-range parameter; ``field`` says which."""


class Unauthorized(KeelError):
    """401: no token, or one the server does not know (revoked, expired)."""


class Forbidden(KeelError):
    """403: the token lacks the role this needs."""


class NotFound(KeelError):
    """404: no such resource for this tenant (another tenant's answers 404 too)."""


class Conflict(KeelError):
    """409: somebody else acted first (e.g. the gate was already decided)."""


class Unprocessable(KeelError):
    """422: e.g. an ``Idempotency-Key`` reused with another body."""


class TooMany(KeelError):
    """429: too many concurrent requests of this kind for the tenant."""


class Timeout(KeelError):
    """A wait or follow ran past its timeout (raised by the client, never by the server)."""


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
    429: TooMany,
}


def error_for(status: int, body: Dict[str, Any], fallback: str) -> KeelError:
    """The error for a status and the server's JSON error body."""
    message = body.get("error")
    field = body.get("field")
    cls = _BY_STATUS.get(status, KeelError)
    return cls(
        status,
        message if isinstance(message, str) else fallback,
        field if isinstance(field, str) else None,
        body,
    )
