"""One typed settings model: defaults < ``tidings.toml`` < ``TIDINGS_*`` environment < flags.

Every key is documented once, here, in the dataclass fields; ``describe()`` prints them all.
A bad value stops start-up with a ConfigError that names the key (``server.port``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tidings.exceptions import ConfigError

SLOW_CONSUMER_POLICIES = ("disconnect", "drop-oldest")
LOG_FORMATS = ("text", "json")
AUTO = "auto"
# A count of processes: a whole number, or "auto" (the CPUs this process may run on).
Workers = int

DOCS = {
    "server.host": "address to listen on",
    "server.port": "port to listen on; 0 picks a free one",
    "server.broker": "memory:// (one process), redis://host:port/db, "
    "redis+sentinel://host:port[,host:port]/master, redis+cluster://host:port[,host:port] "
    "or nats://host:port[,host:port]",
    "server.redis_wait_replicas": "Redis replicas that must hold a publish before it is "
    "acknowledged (WAIT, up to 1 s; fewer: 503, retry with the idempotency key); 0: "
    "acknowledge once the primary stored it, faster, but a failover may lose it",
    "server.api_keys": "keys for the publish and history APIs; empty: loopback clients only",
    "server.allowed_origins": "browser origins allowed on WebSocket and SSE; * allows all",
    "server.heartbeat_seconds": "SSE ': ping' comments and WebSocket pings, this often",
    "server.max_poll_seconds": "longest a long poll is held; larger timeouts are lowered",
    "server.max_message_bytes": "largest published data, as compact JSON",
    "server.max_channels_per_connection": "channels one stream, poll or WebSocket may follow",
    "server.drain_seconds": "window in which clients are asked back at shutdown",
    "server.sse_retry_ms": "the retry: an SSE stream opens with (browser reconnect delay)",
    "server.ws_ping_timeout_seconds": "a WebSocket silent this long past a ping is dropped",
    "server.ws_deflate": "offer permessage-deflate (RFC 7692) on /ws of the standalone server: "
    "each event compressed once, the same bytes to every subscriber that negotiated it",
    "server.write_buffer_limit": "bytes queued for one connection before the slow-consumer "
    "policy applies",
    "server.max_header_bytes": "largest request line plus headers (431 beyond)",
    "server.read_timeout_seconds": "time to send a request, and to stay idle between requests",
    "server.lab": "serve the transport lab page at /lab",
    "server.admin": "serve the admin page at /admin (API key, or loopback without keys)",
    "server.max_connections": "open connections this node accepts; 0: no limit",
    "server.max_connections_per_address": "open connections from one client address; 0: no "
    "limit (behind a proxy, set trusted_proxies first)",
    "server.publish_rate_per_address": "publish requests per second from one address "
    "(HTTP and WebSocket); 0: no limit",
    "server.poll_rate_per_address": "poll requests per second from one address; 0: no limit",
    "server.trusted_proxies": "proxy addresses or CIDR networks whose X-Forwarded-For names "
    "the client (the right-most entry that is not itself a trusted proxy)",
    "server.presence_ttl_seconds": "a node that vanishes takes its clients out of presence "
    "within this time",
    "server.max_rewind": "most events a subscription without a cursor may ask back with "
    "rewind (larger values are lowered to it); 0: rewind is off",
    "server.workers": "processes serving the one port (SO_REUSEPORT), sharing channels "
    'through the broker; "auto": one per CPU. More than 1 needs a redis:// or nats:// broker',
    "server.log_format": "text or json; at log level info, one line per SSE stream or "
    "WebSocket opened and closed",
    "auth.token_secret": "HS256 secret for connection tokens, at least 32 bytes",
    "auth.token_public_key_file": "PEM public key for connection tokens: RSA (2048 bits or "
    "more) for RS256, EC P-256 for ES256",
    "auth.max_token_seconds": "longest a connection token may still live (exp, from now); "
    "longer ones are refused. A revocation (POST /api/disconnect) lasts this long",
    "hooks.subscribe_url": "POSTed before a client follows a channel of a namespace with "
    "hooks on (SSE, polls, WebSocket subscribe); 200 allows, 403 denies",
    "hooks.publish_url": "POSTed before a client publishes to a namespace with hooks on",
    "hooks.connect_url": "POSTed before a WebSocket is accepted (the connection's sub and info)",
    "hooks.timeout_seconds": "longest wait for a hook's answer, queueing included (then 503)",
    "hooks.forward_headers": "request headers the node forwards to the hooks",
    "hooks.max_concurrent": "hook calls in flight at once; the rest wait their turn",
    "namespaces.history_size": "events kept per channel for resume",
    "namespaces.history_ttl_seconds": "oldest event kept, in seconds",
    "namespaces.public": "subscribe without a token",
    "namespaces.hooks": "the application's hooks decide who may subscribe and publish where "
    "no token allows it ([hooks])",
    "namespaces.client_publish": "clients may publish (WebSocket, or POST /api/publish with a "
    "token); once tokens are configured, only with a publish claim that allows the channel",
    "namespaces.presence": "join and leave events and presence queries for the channels",
    "namespaces.slow_consumer": "disconnect (client resumes from its cursor) or drop-oldest "
    "(hold, then catch up from history or reset)",
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    broker: str = "memory://"
    api_keys: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ("*",)
    heartbeat_seconds: float = 15.0
    max_poll_seconds: float = 30.0
    max_message_bytes: int = 65536
    max_channels_per_connection: int = 32
    drain_seconds: float = 10.0
    sse_retry_ms: int = 2000
    ws_ping_timeout_seconds: float = 20.0
    ws_deflate: bool = True
    write_buffer_limit: int = 1_048_576
    max_header_bytes: int = 16384
    read_timeout_seconds: float = 30.0
    lab: bool = True
    admin: bool = True
    max_connections: int = 0
    max_connections_per_address: int = 0
    publish_rate_per_address: float = 0.0
    poll_rate_per_address: float = 0.0
    trusted_proxies: tuple[str, ...] = ()
    presence_ttl_seconds: float = 15.0
    redis_wait_replicas: int = 0
    max_rewind: int = 100
    workers: Workers = 1
    log_format: str = "text"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    token_secret: str = ""
    token_public_key_file: str = ""
    max_token_seconds: float = 86400.0


@dataclass(frozen=True, slots=True)
class HooksSettings:
    subscribe_url: str = ""
    publish_url: str = ""
    connect_url: str = ""
    timeout_seconds: float = 3.0
    forward_headers: tuple[str, ...] = ("Cookie", "Authorization")
    max_concurrent: int = 64


@dataclass(frozen=True, slots=True)
class NamespaceSettings:
    history_size: int = 100
    history_ttl_seconds: float = 300.0
    public: bool = True
    client_publish: bool = False
    presence: bool = False
    slow_consumer: str = "disconnect"
    hooks: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    hooks: HooksSettings = field(default_factory=HooksSettings)
    namespaces: Mapping[str, NamespaceSettings] = field(
        default_factory=lambda: {"default": NamespaceSettings()}
    )

    def namespace(self, name: str) -> NamespaceSettings:
        """The settings of namespace ``name`` (``""`` is the default namespace)."""
        found = self.namespaces.get(name or "default")
        return found if found is not None else self.namespaces["default"]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the four layers and validate the result."""
    raw: dict[str, Any] = {"server": {}, "auth": {}, "hooks": {}, "namespaces": {}}
    if path is not None:
        _merge(raw, _check_tables(_read_toml(Path(path))))
    _merge(raw, _from_environ(os.environ if environ is None else environ))
    if flags:
        _merge(raw, {"server": {k: v for k, v in flags.items() if v is not None}})
    return _build(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("--config", f"{path} is not valid TOML: {error}") from None


def _check_tables(layer: dict[str, Any]) -> dict[str, Any]:
    """Sections, and each namespace, must be tables: ``server = 5`` names its key."""
    for section in ("server", "auth", "hooks", "namespaces"):
        if section in layer and not isinstance(layer[section], Mapping):
            raise ConfigError(section, "must be a table ([section] with key = value lines)")
    for name, values in layer.get("namespaces", {}).items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"namespaces.{name}", "must be a table of namespace options")
    return layer


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """``TIDINGS_SERVER_PORT=9000``; ``TIDINGS_NAMESPACES_CHAT_PRESENCE=true``."""
    layer: dict[str, Any] = {"server": {}, "auth": {}, "hooks": {}, "namespaces": {}}
    namespace_keys = sorted((f.name for f in fields(NamespaceSettings)), key=len, reverse=True)
    for name, value in environ.items():
        if not name.startswith("TIDINGS_"):
            continue
        rest = name[len("TIDINGS_") :].lower()
        for section in ("server", "auth", "hooks"):
            if rest.startswith(section + "_"):
                layer[section][rest[len(section) + 1 :]] = value
        if rest.startswith("namespaces_"):
            tail = rest[len("namespaces_") :]
            for key in namespace_keys:
                if tail.endswith("_" + key):
                    layer["namespaces"].setdefault(tail[: -len(key) - 1], {})[key] = value
                    break
            else:
                raise ConfigError(
                    name, f"no namespace key ends it; known: {', '.join(namespace_keys)}"
                )
    return layer


def _build(raw: dict[str, Any]) -> Settings:
    unknown = set(raw) - {"server", "auth", "hooks", "namespaces"}
    if unknown:
        raise ConfigError(
            sorted(unknown)[0], "unknown section: use server, auth, hooks or namespaces"
        )
    server = _section(ServerSettings, raw["server"], "server")
    auth = _section(AuthSettings, raw["auth"], "auth")
    hooks = _section(HooksSettings, raw["hooks"], "hooks")
    default = _section(
        NamespaceSettings, raw["namespaces"].get("default", {}), "namespaces.default"
    )
    namespaces = {"default": default}
    for name, values in raw["namespaces"].items():
        if name != "default":
            if not isinstance(values, Mapping):
                raise ConfigError(f"namespaces.{name}", "must be a table of namespace options")
            namespaces[name] = _section(NamespaceSettings, values, f"namespaces.{name}", default)
    settings = Settings(server, auth, hooks, namespaces)
    _validate(settings)
    return settings


def _section(cls: Any, values: Mapping[str, Any], prefix: str, base: Any = None) -> Any:
    known = {f.name: f for f in fields(cls)}
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", f"unknown key; known keys: {', '.join(known)}")
        converted[key] = _convert(f"{prefix}.{key}", known[key].type, value)
    return replace(base, **converted) if base is not None else cls(**converted)


def _convert(key: str, type_name: Any, value: Any) -> Any:
    kind = str(type_name)
    try:
        if kind == "bool":
            return _to_bool(value)
        if kind == "Workers":
            return _to_workers(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(item.strip() for item in items if item.strip())
        if not isinstance(value, str):
            raise ValueError
        return value
    except ValueError:
        wanted = 'a whole number or "auto"' if kind == "Workers" else f"a valid {kind}"
        raise ConfigError(key, f"{value!r} is not {wanted}") from None


def _to_workers(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return cpu_count()
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError


def _validate(settings: Settings) -> None:
    server = settings.server
    _require(0 <= server.port <= 65535, "server.port", "must be from 0 to 65535")
    _require(server.heartbeat_seconds > 0, "server.heartbeat_seconds", "must be more than 0")
    _require(server.max_poll_seconds > 0, "server.max_poll_seconds", "must be more than 0")
    _require(server.max_message_bytes >= 16, "server.max_message_bytes", "must be at least 16")
    _require(
        server.max_channels_per_connection >= 1,
        "server.max_channels_per_connection",
        "must be at least 1",
    )
    _require(server.drain_seconds >= 0, "server.drain_seconds", "must be 0 or more")
    _require(server.sse_retry_ms >= 0, "server.sse_retry_ms", "must be 0 or more")
    _require(
        server.write_buffer_limit >= 4096, "server.write_buffer_limit", "must be at least 4096"
    )
    _require(
        server.ws_ping_timeout_seconds > 0, "server.ws_ping_timeout_seconds", "must be more than 0"
    )
    _require(
        "://" in server.broker, "server.broker", "must be a URL such as memory:// or redis://..."
    )
    for key in ("max_connections", "max_connections_per_address"):
        _require(getattr(server, key) >= 0, f"server.{key}", "must be 0 (no limit) or more")
    for key in ("publish_rate_per_address", "poll_rate_per_address"):
        _require(getattr(server, key) >= 0, f"server.{key}", "must be 0 (no limit) or more")
    for entry in server.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                "server.trusted_proxies", f"{entry!r} is not an IP address or CIDR network"
            ) from None
    _require(server.presence_ttl_seconds >= 1, "server.presence_ttl_seconds", "must be at least 1")
    _require(server.max_rewind >= 0, "server.max_rewind", "must be 0 or more")
    _require(server.redis_wait_replicas >= 0, "server.redis_wait_replicas", "must be 0 or more")
    _require(server.workers >= 1, "server.workers", 'must be 1 or more, or "auto"')
    _require(
        server.workers == 1 or not server.broker.startswith("memory:"),
        "server.broker",
        f"memory:// keeps channels inside one process, so {server.workers} workers would not "
        "see each other's events: share them through a broker with --broker "
        "redis://127.0.0.1:6379/0 (or nats://127.0.0.1:4222), or serve with --workers 1",
    )
    _require(
        server.log_format in LOG_FORMATS,
        "server.log_format",
        f"must be one of {', '.join(LOG_FORMATS)}",
    )
    auth = settings.auth
    _require(
        not (auth.token_secret and auth.token_public_key_file),
        "auth.token_public_key_file",
        "set either token_secret (HS256) or token_public_key_file (RS256/ES256), not both",
    )
    _require(auth.max_token_seconds > 0, "auth.max_token_seconds", "must be more than 0")
    tokens = bool(auth.token_secret or auth.token_public_key_file)
    for name, namespace in settings.namespaces.items():
        prefix = f"namespaces.{name}"
        _require(namespace.history_size >= 0, f"{prefix}.history_size", "must be 0 or more")
        _require(
            namespace.history_ttl_seconds > 0,
            f"{prefix}.history_ttl_seconds",
            "must be more than 0",
        )
        _require(
            namespace.slow_consumer in SLOW_CONSUMER_POLICIES,
            f"{prefix}.slow_consumer",
            f"must be one of {', '.join(SLOW_CONSUMER_POLICIES)}",
        )
        _require(
            namespace.public or tokens or namespace.hooks,
            f"{prefix}.public",
            "a namespace that is not public needs connection tokens (auth.token_secret or "
            "auth.token_public_key_file) or the application's hooks (hooks = true)",
        )
    hooks = settings.hooks
    _require(hooks.timeout_seconds > 0, "hooks.timeout_seconds", "must be more than 0")
    _require(hooks.max_concurrent >= 1, "hooks.max_concurrent", "must be at least 1")
    for key in ("subscribe_url", "publish_url", "connect_url"):
        url = getattr(hooks, key)
        _require(
            not url or url.startswith(("http://", "https://")),
            f"hooks.{key}",
            "must be an http:// or https:// URL",
        )


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


def describe() -> str:
    """Every key with its default and meaning, as TOML (``tidings serve --print-config``)."""
    lines = []
    for section, cls in (
        ("server", ServerSettings),
        ("auth", AuthSettings),
        ("hooks", HooksSettings),
        ("namespaces.default", NamespaceSettings),
    ):
        lines.append(f"[{section}]")
        prefix = section.split(".")[0]
        for item in dataclasses.fields(cls):
            lines.append(f"# {DOCS[f'{prefix}.{item.name}']}")
            lines.append(f"{item.name} = {_toml(item.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)
