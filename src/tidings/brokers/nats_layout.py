"""How ``nats://`` lays channels out on JetStream: URL options, names, subjects, headers.

Pure functions and small values, no I/O, so the mapping is testable on its own.

One stream per channel, named ``<prefix>_<token>`` where the token is the channel name in
lowercase base32: stream names may not hold ``.`` or ``/`` and file stores on
case-insensitive disks must not merge ``News`` with ``news``. The stream stores the one
subject ``<prefix>.c.<token>.<epoch>``: a publish to it can only land in the stream lifetime
that the epoch names, so an event's epoch is never stale. JetStream republishes every stored
message to ``<prefix>.r.<token>``, where nodes listen with core subscriptions.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from tidings.config import NamespaceSettings
from tidings.exceptions import ConfigError
from tidings.protocol.event import Event

EVENT_HEADER = "Tidings-Event"
TS_HEADER = "Tidings-Ts"
MSG_ID_HEADER = "Nats-Msg-Id"

_PREFIX = re.compile(r"[A-Za-z0-9-]{1,32}")
_EPOCH = re.compile(r"[A-Za-z0-9]{1,16}")
_STORAGE = ("file", "memory")


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """What a ``nats://host:port?prefix=tidings&replicas=1&storage=file&timeout=5`` URL says."""

    servers: tuple[str, ...]
    prefix: str = "tidings"
    replicas: int = 1
    storage: str = "file"
    timeout: float = 5.0


def parse_url(url: str) -> NatsOptions:
    """Read the broker URL; anything unknown or malformed is a ConfigError."""
    parts = urlsplit(url)
    hosts = [host for host in parts.netloc.split(",") if host]
    if parts.scheme != "nats" or not hosts or parts.path not in ("", "/"):
        raise ConfigError("server.broker", f"{url!r}: expected nats://host:port[,host:port]?...")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - {"prefix", "replicas", "storage", "timeout"})
    if unknown:
        raise ConfigError("server.broker", f"unknown nats:// option(s) {', '.join(unknown)}")
    defaults = NatsOptions(tuple(f"nats://{host}" for host in hosts))
    try:
        options = NatsOptions(
            defaults.servers,
            prefix=query.get("prefix", defaults.prefix),
            replicas=int(query.get("replicas", defaults.replicas)),
            storage=query.get("storage", defaults.storage),
            timeout=float(query.get("timeout", defaults.timeout)),
        )
    except ValueError as error:
        raise ConfigError("server.broker", f"{url!r}: {error}") from None
    _check(_PREFIX.fullmatch(options.prefix) is not None, "prefix: 1 to 32 of A-Z a-z 0-9 -")
    _check(1 <= options.replicas <= 5, "replicas: 1 to 5")
    _check(options.storage in _STORAGE, "storage: file or memory")
    _check(options.timeout > 0, "timeout: seconds, more than 0")
    return options


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError("server.broker", f"nats:// {message}")


def token_of(channel: str) -> str:
    """The channel name as a subject token and stream-name part: lowercase base32, no padding.

    A channel (at most 128 ASCII characters) gives at most 205 characters, so that with a
    32-character prefix a stream name stays within the 255 bytes of a file name.
    """
    return base64.b32encode(channel.encode()).decode().rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class ChannelStream:
    """One channel's stream in one lifetime (``epoch``), and the limits it should have."""

    channel: str
    name: str
    subject: str
    epoch: str
    history_size: int
    ttl_seconds: float

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_seconds * 1000)

    def held_from(self, first_seq: int, last_seq: int) -> int:
        """The first offset history still holds (``last_seq + 1`` when it holds none).

        The size is enforced here as well because JetStream cannot keep zero messages.
        """
        return max(first_seq, last_seq - self.history_size + 1)


class Layout:
    """Names and subjects under one prefix, so that deployments and tests can share a NATS."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def stream_name(self, channel: str) -> str:
        return f"{self.prefix}_{token_of(channel)}"

    def owns(self, stream_name: str) -> bool:
        return stream_name.startswith(f"{self.prefix}_")

    def fanout_subject(self, channel: str) -> str:
        return f"{self.prefix}.r.{token_of(channel)}"

    def stream(self, channel: str, epoch: str, namespace: NamespaceSettings) -> ChannelStream:
        return ChannelStream(
            channel,
            self.stream_name(channel),
            f"{self.prefix}.c.{token_of(channel)}.{epoch}",
            epoch,
            namespace.history_size,
            namespace.history_ttl_seconds,
        )

    def epoch_of(self, channel: str, subjects: list[str] | None) -> str | None:
        """The epoch in a channel stream's one subject, or None if it is not such a stream."""
        if not subjects or len(subjects) != 1:
            return None
        head, _, epoch = subjects[0].rpartition(".")
        expected = f"{self.prefix}.c.{token_of(channel)}"
        return epoch if head == expected and _EPOCH.fullmatch(epoch) else None


def decode_event(channel: str, headers: dict[str, str] | None, data: bytes | None) -> Event | None:
    """A stored message (republished, or read back by sequence) as an Event, or None.

    JetStream adds ``Nats-Subject`` (whose last token is the epoch) and ``Nats-Sequence``
    (the offset) to both forms; the publisher's own headers travel with the message.
    """
    if headers is None:
        return None
    try:
        epoch = headers["Nats-Subject"].rpartition(".")[2]
        offset = int(headers["Nats-Sequence"])
        return Event(
            channel, epoch, offset, headers[EVENT_HEADER], data or b"", int(headers[TS_HEADER])
        )
    except (KeyError, ValueError):
        return None


def with_position(headers: dict[str, str] | None, subject: str, seq: int) -> dict[str, str]:
    """The headers of a message read through the stream API (not a direct get), which has
    its subject and sequence beside its headers: added where ``decode_event`` reads them."""
    return {**(headers or {}), "Nats-Subject": subject, "Nats-Sequence": str(seq)}
