"""Who a client is, and how much of the node it may take.

- **Client address.** A peer listed in ``server.trusted_proxies`` speaks for others: the
  client is the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy
  (entries to its left were written by the client and prove nothing). Any other peer is its
  own client, whatever it sends. The address decides the loopback-only publish rule and
  every per-address limit.
- **Connection limits.** ``max_connections`` counts every open connection of the node.
  ``max_connections_per_address`` counts by client address in a dict that drops an address
  when its count reaches zero, so it never holds more entries than open connections. A
  direct client is counted by its peer address as the connection is accepted, before it
  sends a byte. A trusted proxy carries many clients over its connections (and pools them),
  so its connections are counted by the forwarded address of each request they carry, when
  that request arrives; a request over the limit is answered 429 and the connection stays
  open for the proxy's next request.
- **Rate limits.** A token bucket per address (``publish_rate_per_address``,
  ``poll_rate_per_address``; burst one second's worth, at least 1) in a table kept in
  least-recently-used order with a hard cap: a new address first evicts refilled (idle)
  buckets, and at the cap the least recently used one, so rotating addresses cannot grow
  memory without bound.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tidings.exceptions import (
    Forbidden,
    RateLimited,
    RequestError,
    TooLarge,
    TooManyChannels,
    Unauthorized,
)
from tidings.protocol.http import build_error, is_header

if TYPE_CHECKING:
    from tidings.config import ServerSettings
    from tidings.server.core.stats import Stats

CONNECTION_RETRY_SECONDS = 5  # Retry-After when a connection limit refuses
MAX_RATE_ADDRESSES = 65536  # buckets kept per rate table
UNKNOWN_ADDRESS = "unknown"  # a forwarded chain we cannot read: never loopback, never trusted

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_address(text: str) -> str | None:
    """``text`` as a canonical IP address (port and brackets dropped), or None."""
    host = text.strip()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:  # v4:port
        host = host.partition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return str(address)


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR networks; raises ValueError naming the first bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


class TrustedProxies:
    """The peers whose ``X-Forwarded-For`` names the client."""

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = parse_networks(entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        if address is None or not self._networks:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self._networks)

    def client_address(self, peer: str, forwarded: str | None) -> str:
        """The client behind ``peer``, read right to left through trusted hops."""
        normalized = normalize_address(peer)
        if not forwarded or not self.trusts(normalized):
            return peer
        entries = [entry for entry in forwarded.split(",") if entry.strip()]
        if not entries:
            return peer
        for entry in reversed(entries):
            address = normalize_address(entry)
            if address is None:
                return UNKNOWN_ADDRESS  # a hop we cannot read: trust nothing to its left
            if not self.trusts(address):
                return address
        return normalize_address(entries[0]) or UNKNOWN_ADDRESS  # every hop is a proxy


def forwarded_for(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Every ``X-Forwarded-For`` value in order, joined as one list."""
    values = [value for name, value in headers if is_header(name, b"x-forwarded-for")]
    return b", ".join(values).decode("latin-1") if values else None


class RateTable:
    """Token buckets by address: ``rate`` per second, a burst of one second's worth."""

    __slots__ = ("_buckets", "_max", "burst", "rate")

    def __init__(self, rate: float, max_addresses: int = MAX_RATE_ADDRESSES) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._max = max_addresses
        self._buckets: dict[str, list[float]] = {}  # address -> [tokens, when counted]

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, address: str, now: float) -> int:
        """Take one token: 0 when allowed, else whole seconds until one is there (>= 1)."""
        bucket = self._buckets.pop(address, None)  # re-inserted last: least recent first
        if bucket is None:
            self._make_room(now)
            bucket = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        self._buckets[address] = bucket
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket[0]) / self.rate))

    def _make_room(self, now: float) -> None:
        """Drop up to two least recently used buckets that have refilled (a fresh bucket
        would behave the same), and the least recently used one at the cap."""
        buckets = self._buckets
        for _ in range(2):
            oldest = next(iter(buckets), None)
            if oldest is None:
                return
            tokens, stamp = buckets[oldest]
            refilled = tokens + (now - stamp) * self.rate >= self.burst
            if not refilled and len(buckets) < self._max:
                return
            del buckets[oldest]


def count_refusal(stats: Stats, error: RequestError) -> None:
    """Count a refusal by its code where it is answered (tokens, origins, sizes, channels).

    Rate limits and connection limits count themselves where they are decided, by reason.
    """
    if isinstance(error, Unauthorized | Forbidden | TooLarge | TooManyChannels):
        stats.refused(error.code)


class Limits:
    """The node's connection counts and rate tables, from ``[server]`` settings."""

    __slots__ = (
        "max_connections",
        "max_per_address",
        "open_by_address",
        "poll",
        "proxies",
        "publish",
        "stats",
    )

    def __init__(self, server: ServerSettings, stats: Stats) -> None:
        self.stats = stats
        self.proxies = TrustedProxies(server.trusted_proxies)
        self.max_connections = server.max_connections
        self.max_per_address = server.max_connections_per_address
        self.open_by_address: dict[str, int] = {}
        rate = server.publish_rate_per_address
        self.publish = RateTable(rate) if rate > 0 else None
        rate = server.poll_rate_per_address
        self.poll = RateTable(rate) if rate > 0 else None

    # connections

    def is_proxy(self, peer: str) -> bool:
        """Whether ``peer`` is a trusted proxy (free when none is configured)."""
        return bool(self.proxies) and self.proxies.trusts(normalize_address(peer))

    def admit(self, peer: str, proxied: bool, open_connections: int) -> bytes | None:
        """At accept: the refusal to write and close with, or None (and ``peer`` counted)."""
        if self.max_connections and open_connections >= self.max_connections:
            self.stats.refused("max_connections")
            return _refusal(503, "unavailable", "the server is at its connection limit")
        if self.max_per_address and not proxied and not self.acquire(peer):
            self.stats.refused("max_connections_per_address")
            message = f"at most {self.max_per_address} connections from one address"
            return _refusal(429, "rate_limited", message)
        return None

    def acquire(self, address: str) -> bool:
        count = self.open_by_address.get(address, 0)
        if count >= self.max_per_address:
            return False
        self.open_by_address[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """A connection counted under ``address`` closed (no-op when nothing was counted)."""
        if not self.max_per_address or not address:
            return
        count = self.open_by_address.get(address, 0) - 1
        if count > 0:
            self.open_by_address[address] = count
        else:
            self.open_by_address.pop(address, None)

    def readdress(self, counted: str, client: str) -> str:
        """A proxied request for ``client`` on a connection counted under ``counted``.

        Returns the address the connection is now counted under; raises RateLimited when
        ``client`` is at its limit (the connection is then counted under none).
        """
        if not self.max_per_address:
            return client
        if counted == client:
            return client
        self.release(counted)
        if not self.acquire(client):
            self.stats.refused("max_connections_per_address")
            raise RateLimited(
                f"at most {self.max_per_address} connections from one address",
                CONNECTION_RETRY_SECONDS,
            )
        return client

    # rates

    def check_publish(self, address: str, now: float) -> None:
        if self.publish is not None:
            self._charge(self.publish, address, now, "rate_limited_publish", "publish requests")

    def check_poll(self, address: str, now: float) -> None:
        if self.poll is not None:
            self._charge(self.poll, address, now, "rate_limited_poll", "poll requests")

    def _charge(self, table: RateTable, address: str, now: float, reason: str, what: str) -> None:
        wait = table.charge(address, now)
        if wait:
            self.stats.refused(reason)
            raise RateLimited(
                f"too many {what} from this address (at most {table.rate:g} a second); "
                f"retry after {wait} s",
                wait,
            )


def _refusal(status: int, code: str, message: str) -> bytes:
    retry = str(CONNECTION_RETRY_SECONDS).encode()
    return build_error(status, code, message, [(b"Retry-After", retry)], keep_alive=False)


def exposure_warning(server: ServerSettings) -> str | None:
    """Why publishing is open wider than it looks, or None."""
    if server.api_keys or _is_loopback_host(server.host):
        return None
    return (
        f"no API keys are configured and the server listens on {server.host!r}: publishing "
        "is allowed from loopback only, and a client reaching it through a proxy on this "
        "machine looks like loopback. Set server.api_keys, or list the proxy in "
        "server.trusted_proxies so its clients are seen by their own address."
    )


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or "" for every interface): assume it is reachable
