"""``POST /api/publish``, ``GET /api/history`` and ``GET /api/presence`` (docs/protocol.md 2, 7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from tidings.exceptions import (
    BrokerUnavailable,
    InvalidChannel,
    InvalidField,
    InvalidJSON,
    RequestError,
    TooLarge,
)
from tidings.protocol.channel import Channel, namespace_of, parse_channel, parse_event_name
from tidings.protocol.cursor import parse_cursor
from tidings.protocol.event import Event, encode_data
from tidings.protocol.identity import Identity
from tidings.protocol.poll import poll_body
from tidings.protocol.query import MAX_POLL_LIMIT, _parse_limit
from tidings.server.core.access import authorize_api, authorize_publisher, check_publish
from tidings.server.core.exchange import Exchange
from tidings.server.core.limits import count_refusal
from tidings.server.core.request import Request

if TYPE_CHECKING:
    from tidings.server.core.node import Node

MAX_BATCH = 1000


class PublishCommand:
    """One event to publish, checked: a plain class, as events are (protocol/event.py)."""

    __slots__ = ("channel", "data", "event", "idempotency_key")

    def __init__(
        self, channel: Channel, event: str, data: bytes, idempotency_key: str | None
    ) -> None:
        self.channel: Final = channel
        self.event: Final = event
        self.data: Final = data
        self.idempotency_key: Final = idempotency_key


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


def handle_publish(node: Node, exchange: Exchange, request: Request) -> None:
    node.limits.check_publish(request.peer, node.loop.time())
    publisher = authorize_publisher(node.tokens, node.settings.server.api_keys, request)
    body = _decode(request.body)
    max_bytes = node.settings.server.max_message_bytes
    if isinstance(body, dict) and "events" in body:
        entries = body["events"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH:
            raise InvalidField(f"events must be a list of 1 to {MAX_BATCH} publish objects")
        node.hub.spawn(_publish_batch(node, exchange, entries, max_bytes, publisher))
    else:
        command = _allowed(node, publisher, parse_command(body, max_bytes))
        event = node.broker.publish_nowait(
            command.channel, command.event, command.data, command.idempotency_key
        )
        if event is None:  # stored over the network: awaited in a task
            node.hub.spawn(_publish_one(node, exchange, command))
        else:
            exchange.respond(200, orjson.dumps(_stored(node, event)))


def _allowed(node: Node, publisher: Identity | None, command: PublishCommand) -> PublishCommand:
    if publisher is not None:
        check_publish(node.tokens, node.settings, publisher, command.channel)
    return command


async def _store(node: Node, command: PublishCommand) -> dict[str, str]:
    event = await node.broker.publish(
        command.channel, command.event, command.data, command.idempotency_key
    )
    return _stored(node, event)


def _stored(node: Node, event: Event) -> dict[str, str]:
    """Count a stored event; what the publisher is answered."""
    node.stats.published += 1
    return {"channel": event.channel, "id": event.id}


async def _publish_one(node: Node, exchange: Exchange, command: PublishCommand) -> None:
    try:
        result = await _store(node, command)
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    exchange.respond(200, orjson.dumps(result))


async def _publish_batch(
    node: Node,
    exchange: Exchange,
    entries: list[Any],
    max_bytes: int,
    publisher: Identity | None,
) -> None:
    results: list[dict[str, Any]] = []
    for entry in entries:
        try:
            command = _allowed(node, publisher, parse_command(entry, max_bytes))
            results.append(await _store(node, command))
        except RequestError as error:
            count_refusal(node.stats, error)
            results.append({"error": {"code": error.code, "message": error.message}})
        except BrokerUnavailable as error:
            node.hub.tally.broker_errors += 1
            results.append({"error": {"code": error.code, "message": error.message}})
    exchange.respond(200, orjson.dumps({"results": results}))


def handle_history(node: Node, exchange: Exchange, request: Request) -> None:
    authorize_api(node.settings.server.api_keys, request)
    query = request.query()
    channel = parse_channel(query.one("channel"))
    since_text = query.one("since")
    since = parse_cursor(since_text) if since_text else None
    limit = _parse_limit(query.one("limit"))
    node.hub.spawn(_history(node, exchange, channel, since, min(limit, MAX_POLL_LIMIT)))


async def _history(node: Node, exchange: Exchange, channel: str, since: Any, limit: int) -> None:
    try:
        page = await node.broker.history(channel, since, limit)
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    resets = (page.reset,) if page.reset is not None else ()
    exchange.respond(200, poll_body(page.events, str(page.cursor), resets))


def handle_presence(node: Node, exchange: Exchange, request: Request) -> None:
    """Who is in a channel now. An unknown channel is an empty list, not a 404.

    Presence off for the namespace is a 400 ``invalid_channel``: section 8 fixes the HTTP
    codes, and it is this channel that cannot be asked about here.
    """
    authorize_api(node.settings.server.api_keys, request)
    channel = parse_channel(request.query().one("channel"))
    if not node.hub.presence.enabled(channel):
        node.stats.refused("presence_disabled")
        namespace = namespace_of(channel)
        raise InvalidChannel(
            f"presence is not enabled for {channel!r}: set presence = true"
            f" in [namespaces.{namespace or 'default'}]"
        )
    node.hub.spawn(_presence(node, exchange, channel))


async def _presence(node: Node, exchange: Exchange, channel: str) -> None:
    try:
        entries = await node.hub.presence.clients(channel)
    except BrokerUnavailable as error:
        node.answer_error(exchange, error)
        return
    clients = [entry.public() for entry in entries]
    exchange.respond(200, orjson.dumps({"channel": channel, "clients": clients}))


async def publish_in_process(
    node: Node, channel: str, data: Any, event: str | None, idempotency_key: str | None
) -> str:
    """Publish from inside the host application: the publish API's rules, no HTTP.

    Raises the same :class:`RequestError` an HTTP publisher would get as a 4xx (a bad
    channel, a too-large ``data``), and :class:`BrokerUnavailable` for a 503.
    """
    fields: dict[str, Any] = {"channel": channel, "data": data}
    if event is not None:
        fields["event"] = event
    if idempotency_key is not None:
        fields["idempotency_key"] = idempotency_key
    command = parse_command(fields, node.settings.server.max_message_bytes)
    return (await _store(node, command))["id"]
