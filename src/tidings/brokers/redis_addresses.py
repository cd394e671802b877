"""The URLs of Redis deployments beyond one server: a list of ``host:port``, and options.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[?prefix=&db=]``
``redis+cluster://[[user]:password@]host:port[,host:port...][?prefix=]``

The addresses are the sentinels, or some of the cluster's nodes (the rest are discovered).
The user and password are the Redis servers' (sentinels are asked without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from tidings.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class RedisAddresses:
    """What such a URL says."""

    hosts: tuple[tuple[str, int], ...]
    path: str
    username: str | None
    password: str | None
    options: dict[str, str]


def parse_addresses(url: str, options: tuple[str, ...]) -> RedisAddresses:
    """Read ``url``; a missing address, a bad port or an unknown option is a ConfigError."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = []
    for host in hostlist.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("server.broker", f"{url!r}: {host!r} is not host:port")
        hosts.append((name.strip("[]"), int(port)))
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({key for key, _ in query} - set(options))
    if unknown:
        raise ConfigError(
            "server.broker", f"{parts.scheme}:// takes no option {', '.join(unknown)}"
        )
    return RedisAddresses(
        tuple(hosts),
        unquote(parts.path.strip("/")),
        unquote(username) or None,
        unquote(password) or None,
        dict(query),
    )
