"""Tidings: a real-time delivery server for Python.

One channel model served over WebSocket, Server-Sent Events, long polling and short polling,
with history and exact resume.
"""

from tidings.client import (
    Backoff,
    Client,
    ClientEvent,
    ClientOptions,
    ResetEvent,
    Subscription,
    connect,
    publish,
    publish_async,
)
from tidings.config import Settings, load_settings
from tidings.exceptions import (
    BrokerUnavailable,
    ClientError,
    ConfigError,
    RequestError,
    ServerRejected,
    TidingsError,
)
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BrokerUnavailable",
    "Client",
    "ClientError",
    "ClientEvent",
    "ClientOptions",
    "ConfigError",
    "Cursor",
    "Event",
    "RequestError",
    "ResetEvent",
    "ServerRejected",
    "Settings",
    "Subscription",
    "TidingsError",
    "__version__",
    "connect",
    "load_settings",
    "publish",
    "publish_async",
]
