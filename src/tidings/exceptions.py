"""Every error Tidings raises, in one tree.

::

    TidingsError
    ├── ConfigError              the configuration is wrong: start-up stops, naming the key
    ├── RequestError             the peer sent something we refuse; carries the HTTP status
    │   │                        and the docs/protocol.md error code to answer with
    │   ├── InvalidJSON          400 invalid_json
    │   ├── InvalidField         400 invalid_field
    │   ├── InvalidChannel       400 invalid_channel
    │   ├── InvalidCursor        400 invalid_cursor
    │   ├── TooManyChannels      400 too_many_channels
    │   ├── Unauthorized         401 unauthorized
    │   ├── Forbidden            403 forbidden
    │   ├── NotFound             404 not_found
    │   ├── MethodNotAllowed     405 method_not_allowed (with the allowed methods)
    │   ├── TooLarge             413 too_large
    │   ├── RateLimited          429 rate_limited (with the seconds to wait)
    │   └── WebSocketOnlyError   WebSocket-only codes: unknown_op, already_subscribed,
    │                            not_subscribed, presence_disabled (no HTTP status of their own)
    ├── Unavailable              503 unavailable, with the seconds to wait
    │   ├── BrokerUnavailable    the broker could not store or read: nothing was done
    │   └── HookUnavailable      the application's hook did not answer in time, or wrongly
    └── ClientError              raised by the Python client (tidings.client)
        └── ServerRejected       the server answered with an error body

"You misused the API" (ConfigError, ClientError) is kept apart from "the peer sent garbage"
(RequestError), so a server never answers a client with a stack trace and a client library
never hides a server's refusal behind a generic exception.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ClientError",
    "ConfigError",
    "Forbidden",
    "HookUnavailable",
    "InvalidChannel",
    "InvalidCursor",
    "InvalidField",
    "InvalidJSON",
    "MethodNotAllowed",
    "NotFound",
    "RateLimited",
    "RequestError",
    "ServerRejected",
    "TidingsError",
    "TooLarge",
    "TooManyChannels",
    "Unauthorized",
    "Unavailable",
    "WebSocketOnlyError",
]


class TidingsError(Exception):
    """The root of every error this package raises on purpose."""


class ConfigError(TidingsError):
    """A configuration value is missing or wrong; ``key`` names it (``server.port``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"configuration error in {key}: {message}")
        self.key = key


class RequestError(TidingsError):
    """A request we refuse. ``status`` and ``code`` are what the client is answered."""

    status: int = 400
    code: str = "invalid_field"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidJSON(RequestError):
    code = "invalid_json"


class InvalidField(RequestError):
    code = "invalid_field"


class InvalidChannel(RequestError):
    code = "invalid_channel"


class InvalidCursor(RequestError):
    code = "invalid_cursor"


class TooManyChannels(RequestError):
    code = "too_many_channels"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class TooLarge(RequestError):
    status = 413
    code = "too_large"


class RateLimited(RequestError):
    """Too many requests or connections from one address; ``retry_after`` is in seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class WebSocketOnlyError(RequestError):
    """An error that only exists on the WebSocket (``unknown_op``, ``not_subscribed``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(TidingsError):
    """Something the node depends on did not answer: 503 ``unavailable`` with Retry-After."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BrokerUnavailable(Unavailable):
    """The broker did not answer: nothing was stored."""


class HookUnavailable(Unavailable):
    """The application's hook timed out, failed, or answered what a hook may not answer.

    Hooks fail closed: the client is refused with 503, never let through.
    """


class ClientError(TidingsError):
    """The Python client could not do what it was asked."""


class ServerRejected(ClientError):
    """The server answered an error body: ``status``, ``code`` and ``message`` are its own."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
