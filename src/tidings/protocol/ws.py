"""WebSocket JSON messages (docs/protocol.md section 6) and server text frames.

Server frames are never masked, so an event's frame is built once and written to every
subscriber as it is; the ``websockets`` sans-I/O protocol handles what clients send.

With permessage-deflate (RFC 7692) negotiated with ``server_no_context_takeover``, every
server message is compressed on its own, so an event's compressed frame is also built once
and shared by every subscriber that negotiated the extension.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.exceptions import InvalidField, InvalidJSON, RequestError, WebSocketOnlyError
from tidings.protocol.channel import Channel, parse_channel, parse_event_name
from tidings.protocol.cursor import Cursor, parse_cursor
from tidings.protocol.event import Event, Reset, encode_data
from tidings.protocol.presence import PresenceChange, PresenceEntry

Ref = int | None

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_TOO_SLOW = 4000
CLOSE_TOKEN = 4001
CLOSE_DISCONNECTED = 4002  # the server ended it (POST /api/disconnect): reconnect
CLOSE_REVOKED = 4003  # the server ended it and refuses the token: do not reconnect


@dataclass(frozen=True, slots=True)
class Subscribe:
    ref: Ref
    channel: Channel
    since: Cursor | None
    rewind: int = 0  # past events asked for without ``since``, not yet lowered to the cap


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    ref: Ref
    channel: Channel


@dataclass(frozen=True, slots=True)
class Publish:
    ref: Ref
    channel: Channel
    data: bytes
    event: str
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    ref: Ref
    channel: Channel


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref


ClientMessage = Subscribe | Unsubscribe | Publish | PresenceQuery | Ping


class MessageError(Exception):
    """A client message we refuse, with the ``ref`` to answer it under."""

    def __init__(self, ref: Ref, error: RequestError) -> None:
        super().__init__(error.message)
        self.ref = ref
        self.error = error


def parse_client_message(payload: str | bytes) -> ClientMessage:
    """Decode and validate one client message; raise MessageError carrying its ref."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MessageError(None, InvalidJSON("message is not valid JSON")) from None
    if not isinstance(obj, dict):
        raise MessageError(None, InvalidJSON("message must be a JSON object"))
    ref = obj.get("ref")
    if ref is not None and (not isinstance(ref, int) or isinstance(ref, bool)):
        raise MessageError(None, InvalidField("ref must be an integer"))
    try:
        return _parse_op(obj, ref)
    except RequestError as error:
        raise MessageError(ref, error) from None


def _parse_op(obj: dict[str, Any], ref: Ref) -> ClientMessage:
    op = obj.get("op")
    if op == "subscribe":
        since = obj.get("since")
        if since is not None and not isinstance(since, str):
            raise InvalidField("since must be a cursor string")
        return Subscribe(
            ref,
            parse_channel(obj.get("channel")),
            parse_cursor(since) if since is not None else None,
            _parse_rewind(obj.get("rewind")),
        )
    if op == "unsubscribe":
        return Unsubscribe(ref, parse_channel(obj.get("channel")))
    if op == "publish":
        return _parse_publish(obj, ref)
    if op == "presence":
        return PresenceQuery(ref, parse_channel(obj.get("channel")))
    if op == "ping":
        return Ping(ref)
    raise WebSocketOnlyError(
        "unknown_op", f"unknown op {op!r}: use subscribe, unsubscribe, publish, presence or ping"
    )


def _parse_rewind(value: object) -> int:
    """A JSON ``rewind``: a whole number, 0 or more (``null`` or absent: 0)."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidField("rewind must be a whole number of events, 0 or more")
    return value


def _parse_publish(obj: dict[str, Any], ref: Ref) -> Publish:
    if "data" not in obj:
        raise InvalidField("publish needs data")
    key = obj.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 128):
        raise InvalidField("idempotency_key must be a string of 1 to 128 characters")
    return Publish(
        ref,
        parse_channel(obj.get("channel")),
        encode_data(obj["data"]),
        parse_event_name(obj.get("event")),
        key,
    )


OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
RSV1 = 0x40  # RFC 7692 section 6: set on the first frame of a compressed message
# The LZ77 window the shared compressed frames use: 2**9 bytes, the smallest zlib offers, so
# they are valid whatever server_max_window_bits a client asks for (9 to 15), and a client
# may inflate them with a small window. Events are small: a larger window gains little on
# them (measured in bench/README.md).
DEFLATE_WINDOW_BITS = 9
DEFLATE_LEVEL = 6
EMPTY_STORED_BLOCK = b"\x00\x00\xff\xff"


def encode_text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 section 5.2)."""
    return _encode_frame(OPCODE_TEXT, payload)


def encode_deflated_text_frame(payload: bytes) -> bytes:
    """One text frame carrying ``payload`` compressed on its own (RFC 7692 section 7.2.1)."""
    return _encode_frame(OPCODE_TEXT, deflate_message(payload), RSV1)


def deflate_message(payload: bytes) -> bytes:
    """DEFLATE with no context from earlier messages, ending in a sync flush whose empty
    stored block's last four bytes are removed, as RFC 7692 section 7.2.1 says."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -DEFLATE_WINDOW_BITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[: -len(EMPTY_STORED_BLOCK)]


def encode_close_frame(code: int, reason: str) -> bytes:
    """A close frame: the code, then the reason in UTF-8 (at most 123 bytes)."""
    return _encode_frame(OPCODE_CLOSE, code.to_bytes(2, "big") + reason.encode()[:123])


def _encode_frame(opcode: int, payload: bytes, rsv: int = 0) -> bytes:
    first = 0x80 | rsv | opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + length.to_bytes(8, "big")
    return header + payload


def _frame(obj: dict[str, Any]) -> bytes:
    return encode_text_frame(orjson.dumps(obj))


def event_frame(event: Event) -> bytes:
    """``{"op":"event",...}``: the event object with ``op`` first, built once per event."""
    return _built_once(event, "ws", encode_text_frame)


def deflated_event_frame(event: Event) -> bytes:
    """:func:`event_frame`'s message compressed (RFC 7692), built once per event."""
    return _built_once(event, "ws-deflate", encode_deflated_text_frame)


def _built_once(event: Event, key: str, encode: Callable[[bytes], bytes]) -> bytes:
    frame = event.wire.get(key)
    if frame is None:
        frame = encode(_event_message(event))
        event.wire[key] = frame
    return frame


def _event_message(event: Event) -> bytes:
    return b'{"op":"event",' + event.as_json()[1:]


def subscribed_frame(ref: Ref, channel: str, cursor: Cursor, recovered: bool | None) -> bytes:
    message: dict[str, Any] = {
        "op": "subscribed",
        "ref": ref,
        "channel": channel,
        "id": str(cursor),
    }
    if recovered is not None:
        message["recovered"] = recovered
    return _frame(message)


def unsubscribed_frame(ref: Ref, channel: str) -> bytes:
    return _frame({"op": "unsubscribed", "ref": ref, "channel": channel})


def server_unsubscribed_frame(channel: str) -> bytes:
    """The server ended a subscription (POST /api/unsubscribe): do not subscribe again."""
    return _frame({"op": "unsubscribed", "ref": None, "channel": channel, "reason": "server"})


def published_frame(ref: Ref, channel: str, cursor: str) -> bytes:
    return _frame({"op": "published", "ref": ref, "channel": channel, "id": cursor})


def pong_frame(ref: Ref) -> bytes:
    return _frame({"op": "pong", "ref": ref})


def error_frame(ref: Ref, code: str, message: str) -> bytes:
    return _frame({"op": "error", "ref": ref, "code": code, "message": message})


def reset_frame(reset: Reset) -> bytes:
    return encode_text_frame(b'{"op":"reset",' + reset.as_json()[1:])


def presence_frame(ref: Ref, channel: str, entries: list[PresenceEntry]) -> bytes:
    clients = [entry.public() for entry in entries]
    return _frame({"op": "presence", "ref": ref, "channel": channel, "clients": clients})


def presence_change_frame(change: PresenceChange) -> bytes:
    """``{"op": "join" | "leave", "channel": ..., "client": {"sub": ..., "info": ...}}``."""
    entry = change.entry
    return _frame({"op": change.op, "channel": entry.channel, "client": entry.public()})


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a run of our own server frames (unmasked, unfragmented) into (opcode, payload).

    An edge that cannot write frames (ASGI sends whole messages) uses this to turn the
    frames the core built once into the messages they carry; such an edge never negotiates
    permessage-deflate, so a compressed frame here is a bug, not a message.
    """
    frames = []
    index, end = 0, len(data)
    while index < end:
        if data[index] & RSV1:
            raise ValueError("a compressed frame cannot be passed on as a message")
        opcode = data[index] & 0x0F
        length = data[index + 1] & 0x7F
        index += 2
        if length == 126:
            length = int.from_bytes(data[index : index + 2], "big")
            index += 2
        elif length == 127:
            length = int.from_bytes(data[index : index + 8], "big")
            index += 8
        frames.append((opcode, data[index : index + length]))
        index += length
    return frames
