"""``POST /api/publish``, ``GET /api/history`` and ``GET /api/presence`` (PROTOCOL.md 2, 7)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tidings.exceptions import (
    BrokerUnavailable,
    Forbidden,
    InvalidChannel,
    InvalidField,
    InvalidJSON,
    RequestError,
    TooLarge,
    Unauthorized,
)
from tidings.protocol.channel import Channel, namespace_of, parse_channel, parse_event_name
from tidings.protocol.cursor import parse_cursor
from tidings.protocol.event import encode_data
from tidings.protocol.identity import Identity
from tidings.protocol.poll import poll_body
from tidings.protocol.query import MAX_POLL_LIMIT, _parse_limit
from tidings.server.auth import bearer, check_publish
from tidings.server.http import HttpConnection
from tidings.server.limits import count_refusal
from tidings.server.request import Request

if TYPE_CHECKING:
    from tidings.server.app import App

MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PublishCommand:
    channel: Channel
    event: str
    data: bytes
    idempotency_key: str | None


def authorize_api(app: App, request: Request) -> None:
    """API keys when configured (compared in constant time); otherwise loopback only."""
    keys = app.settings.server.api_keys
    if not keys:
        if not request.is_loopback():
            raise Forbidden("no API keys are configured: only loopback clients may publish")
        return
    given = bearer(request)
    if given is None:
        raise Unauthorized("send the API key as Authorization: Bearer <key>")
    if not _is_api_key(given, keys):
        raise Unauthorized("the API key is not valid")


def _is_api_key(given: str, keys: tuple[str, ...]) -> bool:
    """Compare with every key, each in constant time, so timing tells nothing about a key."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    return matched


def authorize_publisher(app: App, request: Request) -> Identity | None:
    """None for an API key (or loopback without keys): every channel. Otherwise the
    connection token's Identity, which may publish only where ``check_publish`` allows."""
    given = bearer(request)
    keys = app.settings.server.api_keys
    if (
        app.tokens is None
        or given is None
        or (keys and _is_api_key(given, keys))
        or (not keys and request.is_loopback())
    ):
        authorize_api(app, request)
        return None
    if given.count(".") != 2:
        raise Unauthorized("the bearer value is neither a valid API key nor a connection token")
    return app.tokens.verify(given)


def parse_command(obj: Any, max_bytes: int) -> PublishCommand:
    if not isinstance(obj, dict):
        raise InvalidField("each event must be a JSON object")
    if "data" not in obj:
        raise InvalidField("data is required (null is allowed)")
    key = obj.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise InvalidField("idempotency_key must be a string of 1 to 128 characters")
    channel = parse_channel(obj.get("channel"))
    data = encode_data(obj["data"])
    if len(data) > max_bytes:
        raise TooLarge(f"data is {len(data)} bytes as compact JSON; at most {max_bytes} allowed")
    return PublishCommand(channel, parse_event_name(obj.get("event")), data, key)


def _decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidJSON(f"request body is not valid JSON: {error}") from None


def handle_publish(app: App, connection: HttpConnection, request: Request) -> None:
    app.limits.check_publish(request.peer, app.loop.time())
    publisher = authorize_publisher(app, request)
    body = _decode(request.body)
    max_bytes = app.settings.server.max_message_bytes
    if isinstance(body, dict) and "events" in body:
        entries = body["events"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH:
            raise InvalidField(f"events must be a list of 1 to {MAX_BATCH} publish objects")
        app.hub.spawn(_publish_batch(app, connection, entries, max_bytes, publisher))
    else:
        command = _allowed(app, publisher, parse_command(body, max_bytes))
        app.hub.spawn(_publish_one(app, connection, command))


def _allowed(app: App, publisher: Identity | None, command: PublishCommand) -> PublishCommand:
    if publisher is not None:
        check_publish(app.tokens, app.settings, publisher, command.channel)
    return command


async def _store(app: App, command: PublishCommand) -> dict[str, str]:
    event = await app.broker.publish(
        command.channel, command.event, command.data, command.idempotency_key
    )
    app.stats.published += 1
    return {"channel": event.channel, "id": event.id}


async def _publish_one(app: App, connection: HttpConnection, command: PublishCommand) -> None:
    try:
        result = await _store(app, command)
    except BrokerUnavailable as error:
        app.answer_error(connection, error)
        return
    connection.respond(200, orjson.dumps(result))


async def _publish_batch(
    app: App,
    connection: HttpConnection,
    entries: list[Any],
    max_bytes: int,
    publisher: Identity | None,
) -> None:
    results: list[dict[str, Any]] = []
    for entry in entries:
        try:
            command = _allowed(app, publisher, parse_command(entry, max_bytes))
            results.append(await _store(app, command))
        except RequestError as error:
            count_refusal(app.stats, error)
            results.append({"error": {"code": error.code, "message": error.message}})
        except BrokerUnavailable as error:
            app.hub.tally.broker_errors += 1
            results.append({"error": {"code": error.code, "message": error.message}})
    connection.respond(200, orjson.dumps({"results": results}))


def handle_history(app: App, connection: HttpConnection, request: Request) -> None:
    authorize_api(app, request)
    query = request.query()
    channel = parse_channel(query.one("channel"))
    since_text = query.one("since")
    since = parse_cursor(since_text) if since_text else None
    limit = _parse_limit(query.one("limit"))
    app.hub.spawn(_history(app, connection, channel, since, min(limit, MAX_POLL_LIMIT)))


async def _history(
    app: App, connection: HttpConnection, channel: str, since: Any, limit: int
) -> None:
    try:
        page = await app.broker.history(channel, since, limit)
    except BrokerUnavailable as error:
        app.answer_error(connection, error)
        return
    resets = (page.reset,) if page.reset is not None else ()
    connection.respond(200, poll_body(page.events, str(page.cursor), resets))


def handle_presence(app: App, connection: HttpConnection, request: Request) -> None:
    """Who is in a channel now. An unknown channel is an empty list, not a 404.

    Presence off for the namespace is a 400 ``invalid_channel``: section 8 fixes the HTTP
    codes, and it is this channel that cannot be asked about here.
    """
    authorize_api(app, request)
    channel = parse_channel(request.query().one("channel"))
    if not app.hub.presence.enabled(channel):
        app.stats.refused("presence_disabled")
        namespace = namespace_of(channel)
        raise InvalidChannel(
            f"presence is not enabled for {channel!r}: set presence = true"
            f" in [namespaces.{namespace or 'default'}]"
        )
    app.hub.spawn(_presence(app, connection, channel))


async def _presence(app: App, connection: HttpConnection, channel: str) -> None:
    try:
        entries = await app.hub.presence.clients(channel)
    except BrokerUnavailable as error:
        app.answer_error(connection, error)
        return
    clients = [entry.public() for entry in entries]
    connection.respond(200, orjson.dumps({"channel": channel, "clients": clients}))
