"""Server-Sent Events framing (docs/protocol.md section 4), both ways, without I/O.

The encoder is the server's hot path: every event is framed once when it is published and the
same bytes go to every subscriber, so it is plain ``bytes`` concatenation with a
fast path for the only case Tidings produces (compact JSON never holds a raw line break).

The parser is the client's: an incremental implementation of the WHATWG "parse an event
stream" algorithm (https://html.spec.whatwg.org/multipage/server-sent-events.html), fed
whatever chunks the network hands over. Lines are split on bytes and decoded one by one: CR
and LF never occur inside a UTF-8 sequence, so this decodes exactly like decoding the whole
stream first, and a chunk that ends inside a multi-byte character needs no special care.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import orjson

__all__ = [
    "RESET_EVENT",
    "SSEMessage",
    "SSEParser",
    "encode_comment",
    "encode_event_body",
    "encode_id_line",
    "encode_reset",
    "encode_retry",
    "encode_stream_open",
    "is_event_stream_content_type",
]

RESET_EVENT = "tidings.reset"
DISCONNECT_EVENT = "tidings.disconnect"
UNSUBSCRIBED_EVENT = "tidings.unsubscribed"
_RESET_REASONS = frozenset({"gap", "epoch"})
_BOM = b"\xef\xbb\xbf"
# Membership tests with an int are a memchr; with a one-byte bytes they cost ten times more.
_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A


# --- Encoder (server side) ------------------------------------------------------------------


def encode_retry(milliseconds: int) -> bytes:
    """``retry: 2000``: sent at the start and when draining, to spread reconnects out."""
    if milliseconds < 0:
        raise ValueError(f"retry must be a non-negative number of milliseconds, not {milliseconds}")
    return b"retry: %d\n" % milliseconds


def encode_stream_open(retry_ms: int, cursor_list: str) -> bytes:
    """The opening block of every stream.

    The ``id:`` makes a browser that reconnects before the first event resume from where the
    stream started instead of from "now".
    """
    return encode_retry(retry_ms) + encode_id_line(cursor_list) + b"\n"


def encode_id_line(cursor_list: str) -> bytes:
    """``id: <cursor list>``, written per subscriber in front of the shared event body.

    A line break would forge fields and a NUL makes browsers drop the id, so control
    characters are refused rather than silently breaking the client's resume (one
    ``isprintable`` pass is cheaper than looking for each of them).
    """
    if not cursor_list.isprintable():
        raise ValueError(f"an SSE id must be printable (no CR, LF or NUL): {cursor_list!r}")
    return b"id: " + cursor_list.encode() + b"\n"


def encode_event_body(event: str, data_json: bytes) -> bytes:
    """``event:`` and ``data:`` lines and the blank line that dispatches the event.

    It carries no ``id:`` so that one body serves every subscriber, whatever its cursor list.
    """
    _check_single_line(event, "event name")
    if _LF in data_json or _CR in data_json:
        return b"event: " + event.encode() + b"\n" + _multiline_data(data_json) + b"\n"
    return b"event: " + event.encode() + b"\ndata: " + data_json + b"\n\n"


def _multiline_data(data: bytes) -> bytes:
    """One ``data:`` line per line of ``data``: the parser joins them back with LF.

    CR and CRLF cannot survive SSE framing; they come back as LF.
    """
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join([b"data: " + line + b"\n" for line in lines])


def encode_comment(text: str = "ping") -> bytes:
    """A comment block: the heartbeat that keeps proxies and NAT from closing the stream."""
    _check_single_line(text, "comment")
    return b": " + text.encode() + b"\n\n"


def encode_reset(channel: str, cursor: str, reason: str, cursor_list: str) -> bytes:
    """A ``tidings.reset`` event: history lost events after the client's cursor.

    The server never skips silently; this tells the application to reload ``channel`` and
    carries the cursor list that resumes after the reset.
    """
    if reason not in _RESET_REASONS:
        raise ValueError(f"reset reason must be 'gap' or 'epoch', not {reason!r}")
    data = orjson.dumps({"channel": channel, "id": cursor, "reason": reason})
    return encode_id_line(cursor_list) + encode_event_body(RESET_EVENT, data)


def encode_disconnect(reconnect: bool) -> bytes:
    """A ``tidings.disconnect`` event, without ``id:`` (the client's cursor stays): the
    server ends the stream. ``reconnect: false`` means the token is refused from now on."""
    return encode_event_body(DISCONNECT_EVENT, orjson.dumps({"reconnect": reconnect}))


def encode_unsubscribed(channel: str) -> bytes:
    """A ``tidings.unsubscribed`` event, without ``id:``: the server ended ``channel`` for
    this stream, and the client leaves it out when it connects again."""
    data = orjson.dumps({"channel": channel, "reason": "server"})
    return encode_event_body(UNSUBSCRIBED_EVENT, data)


def _check_single_line(value: str, what: str) -> None:
    """A line break inside a field would start a new field: refuse it."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {what} cannot contain CR or LF: {value!r}")


def is_event_stream_content_type(content_type: str) -> bool:
    """Whether a response may be parsed as an event stream.

    EventSource fails the connection (and never reconnects) unless the MIME type's essence
    is ``text/event-stream``; parameters such as ``charset`` are ignored because the stream is
    always UTF-8.
    """
    essence = content_type.partition(";")[0].strip(" \t\r\n").lower()
    return essence == "text/event-stream"


# --- Parser (client side) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event, as an EventSource ``MessageEvent`` would report it."""

    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Incremental WHATWG event-stream parser: bytes in, :class:`SSEMessage` out.

    ``last_event_id`` and ``retry`` belong to the connection, not to one response: they
    survive :meth:`end`, so one parser follows a client across reconnects and
    ``last_event_id`` is what to send as ``Last-Event-ID``. ``comments`` counts comment lines,
    so a client can tell a live stream (heartbeats) from a dead one; ``on_comment`` gets each
    comment's text after the colon, leading space kept (``": ping"`` gives ``" ping"``).
    """

    __slots__ = (
        "_data",
        "_event",
        "_head",
        "_id",
        "_on_comment",
        "_partial",
        "_skip_lf",
        "comments",
        "last_event_id",
        "retry",
    )

    def __init__(self, on_comment: Callable[[str], None] | None = None) -> None:
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0
        self._on_comment = on_comment
        self._start_stream()

    def _start_stream(self) -> None:
        """The per-response state the spec initialises when a stream starts."""
        self._head: bytes | None = b""  # bytes that may yet turn out to be a BOM; None after
        self._partial: list[bytes] = []  # an unterminated line, in pieces, to join only once
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF ends no line
        self._data: list[bytes] = []
        self._event = b""
        self._id = ""  # the spec's "last event ID buffer", committed at each blank line

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse the next bytes of the stream; return the events they completed."""
        chunk = self._skip_stream_prefix(chunk)
        if _LF not in chunk and _CR not in chunk:
            if chunk:
                self._partial.append(chunk)  # no line ends here: do not rescan the buffer
            return []
        self._partial.append(chunk)
        buffer = b"".join(self._partial)
        self._partial.clear()
        lines = buffer.splitlines()  # bytes split on CRLF, LF and CR only, as the spec does
        if buffer.endswith(b"\r"):
            self._skip_lf = True
        elif not buffer.endswith(b"\n"):
            self._partial.append(lines.pop())
        return self._process(lines)

    def end(self) -> list[SSEMessage]:
        """The response ended: drop the unfinished event and get ready for the next one.

        Always empty, since the spec discards an event that no blank line closed; it returns
        a list so that callers can treat the end like any other chunk.
        """
        self._start_stream()
        return []

    def _skip_stream_prefix(self, chunk: bytes) -> bytes:
        """Drop a BOM at the start of the stream and the LF of a CRLF split across chunks."""
        if self._head is not None:
            chunk = self._strip_bom(chunk)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        return chunk

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Strip one BOM, only at the very start; a later U+FEFF is content."""
        head = (self._head or b"") + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head  # could still become a BOM: wait for more bytes
            return b""
        self._head = None
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _process(self, lines: list[bytes]) -> list[SSEMessage]:
        messages: list[SSEMessage] = []
        for line in lines:
            if not line:
                message = self._dispatch()
                if message is not None:
                    messages.append(message)
            elif line[0] == _COLON:
                self._comment(line[1:])
            else:
                self._field(line)
        return messages

    def _comment(self, text: bytes) -> None:
        self.comments += 1
        if self._on_comment is not None:
            self._on_comment(text.decode("utf-8", "replace"))

    def _field(self, line: bytes) -> None:
        """Apply one field; names are compared as bytes, which is exact for ASCII names."""
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:  # a NUL never belongs to a multi-byte sequence
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            self._set_retry(value)

    def _set_retry(self, value: bytes) -> None:
        """Only ASCII digits count; a value too long for ``int`` is ignored like a bad one."""
        if value.isdigit():  # bytes.isdigit is ASCII-only
            with suppress(ValueError):  # more digits than sys.get_int_max_str_digits()
                self.retry = int(value)

    def _dispatch(self) -> SSEMessage | None:
        """A blank line: commit the id, and emit the event if it had any ``data:`` line."""
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], b""
        if not data:
            return None
        return SSEMessage(
            event=event.decode("utf-8", "replace") or "message",
            data=b"\n".join(data).decode("utf-8", "replace"),
            last_event_id=self._id,
        )
