"""Reading the server's refusals (docs/protocol.md section 8) the same way on every technique.

The rule that keeps a client from hammering a server that said no: a ``4xx`` with the
server's own error body (a bad channel, a bad cursor, a missing token) is final and raised as
:class:`ServerRejected`; everything else (``5xx``, ``408``, ``429``, an answer without the
Tidings error body, which comes from something between us and the server) is worth another
try, after the ``Retry-After`` the answer may carry.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from tidings.client.events import Unavailable
from tidings.exceptions import ServerRejected

__all__ = ["error_of", "refusal", "retry_after", "websocket_refusal"]

RETRYABLE_4XX = frozenset({408, 429})
RETRYABLE_CODES = frozenset({"unavailable", "rate_limited"})

# docs/protocol.md section 8: the HTTP status each error code is answered with. The WebSocket
# carries only the code, so the client puts the status back to raise one kind of error.
STATUS_OF_CODE = {
    "invalid_json": 400,
    "invalid_field": 400,
    "invalid_channel": 400,
    "invalid_cursor": 400,
    "too_many_channels": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}


def error_of(body: bytes) -> tuple[str, str] | None:
    """``(code, message)`` of a Tidings error body, or None if the body is something else."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    return error["code"], str(error.get("message", ""))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the form Tidings sends); None if absent or a date."""
    value = headers.get("retry-after")
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def refusal(status: int, body: bytes, headers: Mapping[str, str]) -> ServerRejected | Unavailable:
    """What a non-success HTTP answer means: final (ServerRejected) or worth another try."""
    error = error_of(body)
    if error is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
        return ServerRejected(status, *error)
    code = error[0] if error is not None else "no Tidings error body"
    return Unavailable(f"HTTP {status} ({code})", retry_after(headers))


def websocket_refusal(code: str, message: str) -> ServerRejected | Unavailable:
    """An ``{"op": "error"}`` answer: the same rule, with the status put back from the code."""
    if code in RETRYABLE_CODES:
        return Unavailable(f"{code}: {message}")
    return ServerRejected(STATUS_OF_CODE.get(code, 400), code, message)
