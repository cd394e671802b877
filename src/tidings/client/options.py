"""Every knob of the client, in one frozen model shared by the techniques."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tidings.client.backoff import Backoff
from tidings.client.tokens import Tokens
from tidings.exceptions import ClientError

__all__ = ["ClientOptions", "Endpoint"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Timings and limits; the defaults match a server with default settings.

    - ``heartbeat``: the server's ``heartbeat_seconds``. An SSE stream silent (not even a
      ``: ping``) for ``2 * heartbeat + heartbeat_margin`` is dead; a WebSocket is pinged
      (``{"op": "ping"}``) every ``heartbeat`` and dead without a ``pong`` within
      ``heartbeat + heartbeat_margin``.
    - ``first_byte_timeout``: an SSE stream whose first bytes (the ``retry:`` line the server
      always sends at once) take longer, counted from the request as a browser counts, is
      behind a buffering proxy: ``auto`` moves down.
    - ``open_timeout``: connecting plus the first answer (handshake, ``subscribed``, a poll).
    - ``poll_timeout``: how long a long poll asks the server to hold; the request itself
      gives up ``heartbeat_margin`` later. ``poll_interval``: the pause between short polls.
    - ``restart_window``: after a WebSocket close ``1001``/``1012`` (the server is going away
      or restarting), come back after a random delay up to this long (drawn with the
      backoff's ``random``).
    - ``max_pending``: events a WebSocket subscription holds that the application has not
      read yet; past it the channel is left and, once those are read, followed again from
      the cursor, so a slow reader costs neither memory nor the other subscriptions.
    - ``max_retries``: how many times in a row a subscription tries again after a failure
      (a failed open or a lost connection) before it gives up with ``ClientError``; None
      (the default) tries for ever. A final refusal (``ServerRejected``) is never retried.
    - ``token_retries``: with a token callable, how many renewed tokens in a row the server
      may refuse (``401``, close ``4001``) before the refusal is raised to the application.
    """

    heartbeat: float = 15.0
    heartbeat_margin: float = 5.0
    first_byte_timeout: float = 4.0
    open_timeout: float = 10.0
    poll_timeout: float = 25.0
    poll_interval: float = 2.0
    restart_window: float = 10.0
    max_pending: int = 1000
    max_retries: int | None = None
    token_retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ClientError(f"{item.name} must not be negative, not {value}")
        for name in ("heartbeat", "first_byte_timeout", "open_timeout"):
            if getattr(self, name) <= 0:
                raise ClientError(f"{name} must be more than 0")
        if self.max_pending < 1:
            raise ClientError("max_pending must be at least 1")

    @property
    def silence(self) -> float:
        """How long a stream may stay silent before we call it dead."""
        return 2 * self.heartbeat + self.heartbeat_margin

    @property
    def pong_timeout(self) -> float:
        return self.heartbeat + self.heartbeat_margin

    @property
    def long_poll_deadline(self) -> float:
        return self.poll_timeout + self.heartbeat_margin


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is and what to present to it."""

    url: str  # http(s)://host:port, no trailing slash
    ws_url: str  # ws(s)://host:port/ws
    tokens: Tokens  # the connection token, shared by every technique of a client

    def headers(self) -> dict[str, str]:
        """Authorization with the current token, when there is one (asked at each request)."""
        return self.tokens.headers()
