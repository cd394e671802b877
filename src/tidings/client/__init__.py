"""The Python client: subscribe over any technique, with fallback and resume; publish.

- :func:`connect` gives a :class:`Client`; ``client.subscribe(channel)`` a
  :class:`Subscription` that yields :class:`ClientEvent` and :class:`ResetEvent`;
  ``await client.publish(...)`` publishes.
- :func:`publish` and :func:`publish_async` publish one event without a client.
"""

from tidings.client.backoff import Backoff
from tidings.client.client import Client, connect
from tidings.client.events import ClientEvent, ResetEvent
from tidings.client.ladder import AUTO, TRANSPORTS, Feed, Ladder, Publisher, Technique
from tidings.client.options import ClientOptions
from tidings.client.publish import DEFAULT_URL, publish, publish_async
from tidings.client.subscription import Subscription

__all__ = [
    "AUTO",
    "DEFAULT_URL",
    "TRANSPORTS",
    "Backoff",
    "Client",
    "ClientEvent",
    "ClientOptions",
    "Feed",
    "Ladder",
    "Publisher",
    "ResetEvent",
    "Subscription",
    "Technique",
    "connect",
    "publish",
    "publish_async",
]
