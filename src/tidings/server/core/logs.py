"""Log lines for operators: text or JSON, and one line per stream opened and closed.

Only the long-lived transports are logged, at INFO, when each SSE stream or WebSocket opens
and closes: a line per poll or published event would drown everything else. The lines carry
the client's address and, with a token, its ``sub``; never a request target, a query string
or a token. Nothing here runs on the delivery path, and with INFO off a stream pays one
level check when it opens and one when it closes.

JSON lines hold one object each, with the fixed keys ``ts``, ``level``, ``logger`` and
``msg``, then the line's fields (``exc`` with a traceback when there is one).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tidings.protocol import ws

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

    from tidings.hub.hub import Hub
    from tidings.protocol.identity import Identity

log = logging.getLogger("tidings.connections")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CLIENT_CLOSED = "client closed"

# Why the server closed a WebSocket, by the close code it sent.
CLOSE_REASONS = {
    ws.CLOSE_TOO_SLOW: "slow consumer",
    ws.CLOSE_TOKEN: "token expired",
    ws.CLOSE_GOING_AWAY: "drain",
    ws.CLOSE_RESTART: "drain",
    ws.CLOSE_UNSUPPORTED: "protocol error: binary frame",
    ws.CLOSE_POLICY: "policy violation",
    ws.CLOSE_TOO_BIG: "protocol error: frame too large",
    1002: "protocol error",
    1007: "protocol error: invalid UTF-8",
    1011: "server error",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry.setdefault(key, value)  # the fixed keys cannot be overwritten
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the record's fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return line
        return line + "".join(f" {key}={_text_value(value)}" for key, value in fields.items())


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return orjson.dumps(text).decode()
    return text


class WorkerField(logging.Filter):
    """Adds ``worker=N`` to every line of a worker process (``server.workers``)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.fields = {**getattr(record, "fields", {}), "worker": self.worker}
        return True


def configure(level: str, log_format: str, worker: int | None = None) -> None:
    """Send every log line to stderr as ``log_format`` (text or json) at ``level``.

    Below INFO, the server's own start-up and shutdown lines stay visible: they say where
    it listens. A worker's lines carry its number.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(WorkerField(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if logging.getLevelName(level.upper()) > logging.INFO:
        logging.getLogger("tidings.server").setLevel(logging.INFO)


class HttpLogged(Protocol):
    """An HTTP connection as its log lines see it."""

    opened_at: float
    address: str
    peer: str
    ended: str | None


def http_opened(connection: HttpLogged, now: float) -> None:
    """Log an HTTP connection (polls, publishes, pages) that a client opened."""
    if not log.isEnabledFor(logging.INFO):
        return
    connection.opened_at = now
    fields = {"transport": "http", "address": connection.address or connection.peer}
    log.info("connection opened", extra={"fields": fields})


def http_closed(connection: HttpLogged, now: float, exc: Exception | None) -> None:
    """Log its end, once: at close, or when it becomes an SSE stream or a WebSocket."""
    if not connection.opened_at:
        return
    seconds = now - connection.opened_at
    connection.opened_at = 0.0
    reason = connection.ended or (CLIENT_CLOSED if exc is None else f"connection lost: {exc}")
    fields = {
        "transport": "http",
        "address": connection.address or connection.peer,
        "seconds": round(seconds, 3),
        "reason": reason,
    }
    log.info("connection closed", extra={"fields": fields})


class StreamLogged(Protocol):
    """An SSE stream or WebSocket as its log lines see it."""

    opened_at: float
    address: str
    ended: str | None
    identity: Identity
    hub: Hub
    tails: dict[str, Any]


def stream_opened(stream: StreamLogged, transport: str) -> None:
    """Log a stream that opened; start its clock (only when the line will be written)."""
    if not log.isEnabledFor(logging.INFO):
        return
    stream.opened_at = stream.hub.loop.time()
    fields = {
        "transport": transport,
        "address": stream.address,
        "sub": stream.identity.sub,
        "channels": len(stream.tails),
    }
    log.info("stream opened", extra={"fields": fields})


def stream_closed(stream: StreamLogged, transport: str, exc: Exception | None) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    reason = stream.ended or (CLIENT_CLOSED if exc is None else f"connection lost: {exc}")
    seconds = stream.hub.loop.time() - stream.opened_at if stream.opened_at else None
    fields = {
        "transport": transport,
        "address": stream.address,
        "sub": stream.identity.sub,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "reason": reason,
    }
    log.info("stream closed", extra={"fields": fields})


def websocket_ending(protocol: ServerProtocol) -> str | None:
    """Why the server ended a WebSocket, from the close frame it sent (None: the client)."""
    sent = protocol.close_sent
    if sent is None or protocol.close_rcvd_then_sent:
        return None
    return close_reason(sent.code)


def close_reason(code: int) -> str:
    """Why the server ended a WebSocket, by the code of the close it sent."""
    return CLOSE_REASONS.get(code, f"closed with code {code}")
