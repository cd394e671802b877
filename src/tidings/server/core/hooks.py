"""The application decides who may connect, subscribe and publish: hooks.

A namespace with ``hooks = true`` asks the application wherever no connection token allows
the client: the node POSTs JSON to a URL of the application (``[hooks]``), or, in the
mount, calls a Python function. The call carries the action, the channels, the transport,
the client's address and the request headers the configuration forwards (by default
``Cookie`` and ``Authorization``), so the application decides with its own sessions.

- ``200 {"sub": ..., "info": ..., "expires_at": ...}`` allows; ``sub`` and ``info`` then
  count like a token's (presence, logs), and ``expires_at`` (seconds since the epoch, or
  absent) ends the decision as a token's ``exp`` would.
- ``403`` denies: the client gets ``403`` (a WebSocket, a ``forbidden`` error).
- Anything else fails closed: a timeout, an error, an unreachable application, a redirect,
  a body that is not the JSON above. The client gets ``503`` with ``Retry-After`` and the
  node's log says what was wrong. A hook is never silently skipped.

A decision is asked once per connection and channel (an SSE stream, a WebSocket), and kept
for identical calls (the same forwarded headers) until its ``expires_at``, so a poller or a
crowd reconnecting with the same session asks once. At most ``max_concurrent`` calls are in
flight; the others wait for a slot within the same timeout, so a thousand clients
reconnecting at once cannot overwhelm the application.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tidings.config import HooksSettings, Settings
from tidings.exceptions import ConfigError, Forbidden, HookUnavailable
from tidings.protocol.channel import namespace_of
from tidings.protocol.identity import Identity

log = logging.getLogger("tidings.hooks")

DECISIONS_KEPT = 10_000
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class HookCall:
    """What the node asks the application."""

    action: str  # "connect", "subscribe" or "publish"
    channels: tuple[str, ...]
    transport: str
    client: str
    headers: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "channels": list(self.channels),
            "transport": self.transport,
            "client": self.client,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True, slots=True)
class Allow:
    """The application allows the call, for ``sub`` with ``info``, until ``expires_at``."""

    sub: str | None = None
    info: Any = None
    expires_at: float | None = None


HookFunction = Callable[[HookCall], Awaitable[Allow | None]]  # None denies


@dataclass(frozen=True, slots=True)
class HookFunctions:
    """Python functions the mount may pass instead of URLs."""

    connect: HookFunction | None = None
    subscribe: HookFunction | None = None
    publish: HookFunction | None = None


@dataclass(slots=True)
class _Kept:
    decisions: dict[tuple[Any, ...], Allow] = field(default_factory=dict)

    def get(self, key: tuple[Any, ...]) -> Allow | None:
        allow = self.decisions.get(key)
        if allow is not None and allow.expires_at is not None and allow.expires_at <= time.time():
            del self.decisions[key]
            return None
        return allow

    def put(self, key: tuple[Any, ...], allow: Allow) -> None:
        if allow.expires_at is None:
            return  # kept only where the application said how long it holds
        if len(self.decisions) >= DECISIONS_KEPT:
            del self.decisions[next(iter(self.decisions))]
        self.decisions[key] = allow


class Hooks:
    """The node's hooks: URLs from the settings, or functions from the host application."""

    def __init__(self, settings: HooksSettings, functions: HookFunctions | None = None) -> None:
        functions = functions or HookFunctions()
        self.settings = settings
        self.forwarded = tuple(name.lower() for name in settings.forward_headers)
        self._actions: dict[str, HookFunction | None] = {
            "connect": functions.connect or self._url_hook(settings.connect_url),
            "subscribe": functions.subscribe or self._url_hook(settings.subscribe_url),
            "publish": functions.publish or self._url_hook(settings.publish_url),
        }
        self._kept = _Kept()
        self._in_flight: dict[tuple[Any, ...], asyncio.Future[Allow | None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._client: httpx.AsyncClient | None = None

    def has(self, action: str) -> bool:
        return self._actions[action] is not None

    def require(self, action: str, namespace: str) -> None:
        """A namespace with hooks needs the subscribe hook: stop start-up without it."""
        if not self.has(action):
            raise ConfigError(
                f"hooks.{action}_url",
                f"namespace {namespace!r} has hooks = true: set hooks.{action}_url, or pass "
                f"a {action} function to the mount",
            )

    def call_for(
        self, action: str, channels: tuple[str, ...], transport: str, client: str, headers: Any
    ) -> HookCall:
        """The call for a request; ``headers`` are its (name, value) pairs of bytes."""
        return HookCall(action, channels, transport, client, self.forwarded_of(headers))

    def forwarded_of(self, headers: Any) -> tuple[tuple[str, str], ...]:
        """The request headers the hooks see: those named in ``forward_headers``."""
        return tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in headers
            if name.lower().decode("latin-1") in self.forwarded
        )

    def needs_publish(self, settings: Settings, identity: Identity, channel: str) -> bool:
        """Whether the publish hook decides ``channel`` for ``identity``."""
        namespace = settings.namespace(namespace_of(channel))
        return (
            namespace.hooks
            and namespace.client_publish
            and self.has("publish")
            and not identity.may_publish(channel)
        )

    async def ask(self, call: HookCall) -> Allow:
        """The application's decision; Forbidden if it denies, HookUnavailable if it fails."""
        key = (call.action, call.channels, call.headers)
        allow = self._kept.get(key)
        if allow is None:
            waiting = self._in_flight.get(key)
            if waiting is None:
                waiting = asyncio.ensure_future(self._decide(call))
                self._in_flight[key] = waiting
                waiting.add_done_callback(lambda _: self._in_flight.pop(key, None))
            answer = await asyncio.shield(waiting)
            if answer is None:
                raise Forbidden(f"the application does not allow {call.action} here")
            self._kept.put(key, answer)
            allow = answer
        return allow

    async def _decide(self, call: HookCall) -> Allow | None:
        function = self._actions[call.action]
        assert function is not None
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrent)
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                async with self._slots:
                    return await function(call)
        except TimeoutError:
            log.error(
                "the %s hook did not answer within %g s: refusing (503)",
                call.action,
                self.settings.timeout_seconds,
            )
            raise HookUnavailable(
                "the application did not answer in time: try again", RETRY_AFTER_SECONDS
            ) from None
        except HookUnavailable:
            raise
        except Exception as error:
            log.error("the %s hook failed: %r; refusing (503)", call.action, error)
            raise HookUnavailable(
                "the application could not decide: try again", RETRY_AFTER_SECONDS
            ) from None

    def _url_hook(self, url: str) -> HookFunction | None:
        if not url:
            return None

        async def post(call: HookCall) -> Allow | None:
            if self._client is None:
                self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
            try:
                response = await self._client.post(url, json=call.as_json())
            except httpx.HTTPError as error:
                log.error("the %s hook at %s is unreachable: %s", call.action, url, error)
                raise HookUnavailable(
                    "the application could not be reached: try again", RETRY_AFTER_SECONDS
                ) from None
            return _answer(call.action, url, response)

        return post

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _answer(action: str, url: str, response: httpx.Response) -> Allow | None:
    """Read a hook's answer: 200 with the JSON object, or 403; anything else fails."""
    if response.status_code == 403:
        return None
    if response.status_code != 200:
        _bad(action, url, f"answered {response.status_code}; a hook answers 200 or 403")
    try:
        body = response.json()
    except ValueError:
        _bad(action, url, "answered 200 with a body that is not JSON")
    if not isinstance(body, dict):
        _bad(action, url, "answered 200 with JSON that is not an object")
    sub, expires_at = body.get("sub"), body.get("expires_at")
    if sub is not None and not isinstance(sub, str):
        _bad(action, url, "answered a sub that is not a string")
    if expires_at is not None and (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, int | float)
        or not math.isfinite(expires_at)
    ):
        _bad(action, url, "answered an expires_at that is not a number of seconds")
    return Allow(sub, body.get("info"), None if expires_at is None else float(expires_at))


def _bad(action: str, url: str, what: str) -> Any:
    log.error("the %s hook at %s %s: refusing (503)", action, url, what)
    raise HookUnavailable("the application answered wrongly: try again", RETRY_AFTER_SECONDS)


def identity_of(
    allow: Allow, channels: tuple[str, ...], base: Identity, action: str = "subscribe"
) -> Identity:
    """The connection's identity once the hook allowed ``action`` on ``channels``: its sub
    and info, the channels added to what the token allowed (to follow, or to publish), and
    the earlier of the two expiries."""
    expiries = [t for t in (base.expires_at, allow.expires_at) if t is not None]
    return Identity(
        sub=allow.sub if allow.sub is not None else base.sub,
        info=allow.info if allow.sub is not None else base.info,
        channels=(*base.channels, *channels) if action == "subscribe" else base.channels,
        publish=(*base.publish, *channels) if action == "publish" else base.publish,
        expires_at=min(expires_at for expires_at in expiries) if expiries else None,
    )
