"""The standalone edge's WebSocket framing: handshake, frames in, closing handshake.

The ``websockets`` sans-I/O ``ServerProtocol`` answers the handshake, reads client frames,
answers pings and runs the closing handshake; :class:`FrameSocket` assembles whole messages
for the core's :class:`WebSocketSession` and writes what the protocol wants sent.

With ``server.ws_deflate`` on, a client that offers permessage-deflate (RFC 7692) gets it
with ``server_no_context_takeover``: every message we send is compressed on its own, so an
event's compressed frame is the same bytes for every subscriber (and
``client_no_context_takeover``, see :data:`DEFLATE`). The protocol object then
holds the negotiated extension, inflates the client's compressed frames and applies the
size limit to the inflated size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mypy_extensions import mypyc_attr
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from tidings.protocol import ws
from tidings.protocol.fragments import Fragments, check_utf8
from tidings.protocol.http import build_error
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.server.core.logs import websocket_ending
from tidings.server.core.node import Node
from tidings.server.core.request import Request
from tidings.server.core.transports.websocket import WebSocketSession

quiet = logging.getLogger("tidings.ws.protocol")
quiet.setLevel(logging.WARNING)
# Answers every handshake that negotiates nothing: ``accept`` reads only the request it is
# given. One object for all, because every websockets protocol object is a reference cycle
# (it and its parser) that only the garbage collector frees, and a served process collects
# rarely (collector.py): one made per handshake would pile up between collections.
HANDSHAKES = ServerProtocol(logger=quiet)

DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
# Close codes the connection fails with when the peer breaks RFC 6455, counted as refusals.
FAILURE_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "ws_protocol_error",
    CloseCode.INVALID_DATA: "ws_invalid_utf8",
    CloseCode.MESSAGE_TOO_BIG: "too_large",
}
HANDSHAKE_SLACK = 4096  # a whole message may exceed max_message_bytes by its JSON envelope
EXTENSIONS_HEADER = "Sec-WebSocket-Extensions"
# What we answer to a client's permessage-deflate offer: each server message compressed on
# its own (the shared frames need it), within the window the shared frames use; and each
# client message compressed on its own too (RFC 7692 lets the server ask for it even when
# the client did not offer it). With client context takeover every connection would keep an
# inflate state (7 KB) and its window (up to 32 KB, from the first compressed message) for
# its life; without, a connection that negotiated deflate holds under 1 KB more than one
# that did not (bench/README.md), and client messages (subscribe, publish) are small and
# gain little from a shared context.
DEFLATE = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    client_no_context_takeover=True,
    server_max_window_bits=ws.DEFLATE_WINDOW_BITS,
)


class FrameProtocol(ServerProtocol):
    """The ``websockets`` server protocol, letting a close frame end a fragmented message.

    RFC 6455 section 5.4 allows control frames between the fragments of a message; a close
    there is a normal closing handshake that leaves the message unfinished (Autobahn case
    7.1.5), where ``websockets`` fails the connection with 1002.
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None  # the unfinished message is dropped, not an error
        super().recv_frame(frame)


class Resting:
    """Protocol objects at rest, lent to the sockets that have frames to read.

    A protocol at rest (see :class:`FrameSocket`) holds nothing a new one created OPEN would
    not, so a socket that lets one go gives it back here and the next socket with frames to
    read takes it. Making one per read instead would cost a random id and a reference cycle
    (a protocol and its parser) that only the garbage collector frees, for every burst of
    client messages. At most ``RESTING_KEPT`` wait; one that failed, closed, or kept
    anything to send or to read is dropped, never lent.
    """

    __slots__ = ("_count", "_kept")

    def __init__(self) -> None:
        self._kept: dict[int, list[FrameProtocol]] = {}  # by their message size limit
        self._count = 0

    def lend(self, max_size: int) -> FrameProtocol:
        kept = self._kept.get(max_size)
        if kept:
            self._count -= 1
            return kept.pop()
        return FrameProtocol(state=State.OPEN, max_size=max_size, logger=quiet)

    def give_back(self, protocol: FrameProtocol, max_size: int) -> None:
        """``protocol``, made with ``max_size``, is no longer used by the socket it was lent to
        (a socket that negotiated an extension keeps its own and never gives it back)."""
        if (
            self._count < RESTING_KEPT
            and protocol.state is State.OPEN
            and protocol.parser_exc is None
            and protocol.current_size is None
            and not protocol.data_to_send()
            and not protocol.events_received()
        ):
            self._kept.setdefault(max_size, []).append(protocol)
            self._count += 1


RESTING_KEPT = 256
RESTING = Resting()


# A client's pong with no payload, as the whole of one read: the answer to the server's
# heartbeat ping (b"\x89\x00"), with its 4-byte mask.
EMPTY_PONG_LENGTH = 6
EMPTY_PONG_HEAD = b"\x8a\x80"


# compiled (setup.py), yet open to interpreted subclasses:
# the Autobahn echo (echo.py) subclasses it
@mypyc_attr(allow_interpreted_subclasses=True)
class FrameSocket(WebSocketSession):
    """The standalone edge's WebSocket: ``websockets``' protocol parses and frames.

    Idle, a WebSocket's only traffic is the heartbeat: the server's ping and the client's
    empty pong. Parsing that pong through the protocol is most of what an idle connection
    costs, so the socket follows where frames begin and end in the bytes it reads (their
    headers only), and a read that is exactly one empty pong, starting where a frame starts,
    only marks the peer alive. Everything else goes through the protocol, which sees a stream
    with whole pongs taken out: a pong is a frame of its own and changes no state there.

    Between messages ("at rest"), an open protocol object without an extension holds nothing
    that a new one created OPEN would not (a frame ends where its bytes end, no message is
    half read, everything it had to send is sent), yet it is half of what an idle WebSocket
    holds (1.4 of 2.7 KB of Python objects). A socket opens without one (``protocol`` is
    ``None``) and takes one from ``RESTING`` when frames come (made anew, about 4 us, if none
    waits there); the first read that leaves it at rest, typically after its subscribes,
    gives it back. Once it has rested, a protocol made by
    a later read is kept until a heartbeat finds the socket at rest. So a quiet socket holds
    none, and one that keeps sending makes one per heartbeat interval. A protocol that
    negotiated permessage-deflate is kept: its extension was agreed in the handshake, which
    is not run again.
    """

    __slots__ = ("_frame_head", "_frame_left", "_rested", "fragments", "protocol")

    def __init__(
        self,
        node: Node,
        protocol: FrameProtocol | None = None,
        identity: Identity = ANONYMOUS,
        deflate: bool = False,
    ) -> None:
        super().__init__(node, identity, deflate)
        self.protocol = protocol
        self._rested = False  # was at rest once: a protocol made by a read stays till a heartbeat
        self.fragments: Fragments | None = None
        self._frame_left = 0  # bytes of the frame being read still to come
        self._frame_head = b""  # the start of a frame header split across reads

    # reading

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.hub.loop.time()
        if (
            len(data) == EMPTY_PONG_LENGTH
            and data.startswith(EMPTY_PONG_HEAD)
            and not self._frame_left
            and not self._frame_head
            and self.accepting
        ):
            return  # the answer to a heartbeat: the peer is alive, nothing to parse
        self._follow_frames(data)
        protocol = self._frames()
        failed = protocol.parser_exc
        protocol.receive_data(data)
        if protocol.parser_exc is not failed:
            self._count_failure()
        for frame in protocol.events_received():
            # frames read before a close or a failure in the same data are not acted on
            if (
                isinstance(frame, Frame)
                and frame.opcode in DATA_OPCODES
                and protocol.state is State.OPEN
            ):
                self._on_data(frame)
        self._flush()
        if protocol.state is not State.OPEN:
            self.accepting = False
        elif not self._rested and self._at_rest():
            self._let_go()  # the first time at rest: the next read takes another

    def _at_rest(self) -> bool:
        """Between messages, open, no extension: a new protocol would hold the same."""
        return (
            not self._frame_left
            and not self._frame_head
            and self.fragments is None
            and not self.deflate
            and self.accepting
            and self.protocol is not None
            and self.protocol.state is State.OPEN
        )

    def heartbeat(self, now: float) -> None:
        super().heartbeat(now)
        if self._at_rest():
            self._let_go()

    def _let_go(self) -> None:
        assert self.protocol is not None
        RESTING.give_back(self.protocol, frame_limit(self.node))
        self.protocol = None
        self._rested = True

    def _frames(self) -> FrameProtocol:
        """The protocol object, taken (OPEN) if the last read let it go."""
        protocol = self.protocol
        if protocol is None:
            protocol = self.protocol = RESTING.lend(frame_limit(self.node))
        return protocol

    def _follow_frames(self, data: bytes) -> None:
        """Where the frames in ``data`` end (RFC 6455 section 5.2: headers and lengths)."""
        left = self._frame_left
        if left >= len(data):
            self._frame_left = left - len(data)
            return
        view = self._frame_head + data[left:] if self._frame_head else data[left:]
        start, end = 0, len(view)
        while end - start >= 2:
            second = view[start + 1]
            length = second & 0x7F
            header = 2 + (4 if second & 0x80 else 0)
            if length == 126:
                header += 2
                if end - start < 4:
                    break
                length = int.from_bytes(view[start + 2 : start + 4], "big")
            elif length == 127:
                header += 8
                if end - start < 10:
                    break
                length = int.from_bytes(view[start + 2 : start + 10], "big")
            frame_end = start + header + length
            if frame_end > end:
                self._frame_left, self._frame_head = frame_end - end, b""
                return
            start = frame_end
        self._frame_left, self._frame_head = 0, bytes(view[start:end])

    def connection_lost(self, exc: Exception | None) -> None:
        # the close frame the server sent says why, even if the peer then went silent
        if self.protocol is not None:
            self.ended = websocket_ending(self.protocol) or self.ended
        super().connection_lost(exc)

    def _on_data(self, frame: Frame) -> None:
        """Text messages are read whole; a binary one is refused at its first frame."""
        if frame.opcode is Opcode.BINARY:
            self.refuse_binary()
            return
        payload = self._assemble(frame)
        if payload is not None:
            self._on_text(payload)

    def _assemble(self, frame: Frame) -> bytes | None:
        """The whole message once its last frame is in; ``None`` until then or if it failed."""
        data = bytes(frame.data)
        try:
            if self.fragments is None:
                if frame.fin:
                    if frame.opcode is Opcode.TEXT:
                        check_utf8(data)
                    return data
                self.fragments = Fragments(frame.opcode is Opcode.TEXT)
            self.fragments.add(data, frame.fin)
        except UnicodeDecodeError as error:
            self.fragments = None
            self._frames().fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {error.start}")
            self._count_failure()
            return None
        if not frame.fin:
            return None
        payload = self.fragments.join()
        self.fragments = None
        return payload

    def _count_failure(self) -> None:
        """Count a connection failed for what the peer sent, by the close code it got."""
        sent = self._frames().close_sent
        if sent is not None and sent.code in FAILURE_REASONS:
            self.node.stats.refused(FAILURE_REASONS[sent.code])

    def eof_received(self) -> bool | None:
        self.accepting = False
        self._frames().receive_eof()
        self._flush()
        return None

    def _flush(self) -> None:
        """Write what the protocol wants sent; a close it started ends the transport."""
        protocol = self._frames()
        for data in protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif not self.transport.is_closing():
                self.transport.close()
        if protocol.state is State.CLOSED and not self.transport.is_closing():
            self.transport.close()

    def send_close(self, code: int, reason: str) -> None:
        protocol = self._frames()
        if protocol.state is State.OPEN:
            protocol.send_close(code, reason)
            self._flush()


@dataclass(frozen=True, slots=True)
class Handshake:
    """The answer to a handshake request; once it is a 101 (``opened``), the protocol that
    reads frames if it must be that one (``None``: the socket makes one when frames come)."""

    answer: bytes
    opened: bool = False
    protocol: FrameProtocol | None = None
    deflate: bool = False  # permessage-deflate negotiated


def handshake(node: Node, request: Request) -> Handshake:
    """The handshake's answer, and the protocol object that reads frames once it is 101.

    Without compression, none: the socket makes one, created already OPEN, when the first
    frames come (the handshake's parser would keep the whole request alive for the life of
    the connection). A negotiated extension lives in the protocol object that negotiated it,
    so a client offering permessage-deflate is answered by the one that then reads its frames.
    """
    ws_request = _handshake_request(request)
    max_size = frame_limit(node)
    if node.settings.server.ws_deflate and _offers_deflate(ws_request):
        negotiated = _negotiate(ws_request, max_size)
        if negotiated is not None:
            return negotiated
    response = HANDSHAKES.accept(ws_request)
    if response.status_code != 101:
        return _refusal(response.body)
    return Handshake(response.serialize(), opened=True)


def frame_limit(node: Node) -> int:
    """The largest message a client may send (its frames, or inflated)."""
    return node.settings.server.max_message_bytes + HANDSHAKE_SLACK


def _negotiate(ws_request: WsRequest, max_size: int) -> Handshake | None:
    """The documented sans-I/O handshake: the request in as bytes, the response out.

    ``None`` if ``websockets`` cannot read the request back (a non-ASCII target, a header
    line over its limits, which httptools accepted): such a client is served uncompressed.
    """
    if not ws_request.path.isascii():
        return None
    protocol = FrameProtocol(extensions=[DEFLATE], max_size=max_size, logger=quiet)
    protocol.receive_data(ws_request.serialize())
    received = protocol.events_received()
    if len(received) != 1 or not isinstance(received[0], WsRequest):
        return None
    response = protocol.accept(received[0])
    # the handshake parser's frame holds the request for the connection's life: its headers
    # would be most of what a connection that negotiated deflate holds beyond one that did not
    received[0].headers.clear()
    if response.status_code != 101:
        return _refusal(response.body)
    protocol.send_response(response)
    deflate = EXTENSIONS_HEADER in response.headers
    return Handshake(b"".join(protocol.data_to_send()), True, protocol, deflate)


def _refusal(body: bytes | bytearray | None) -> Handshake:
    reason = bytes(body or b"invalid WebSocket handshake").decode("utf-8", "replace")
    return Handshake(build_error(400, "invalid_field", reason.strip(), keep_alive=False))


def _offers_deflate(ws_request: WsRequest) -> bool:
    return any(
        "permessage-deflate" in value.lower()
        for value in ws_request.headers.get_all(EXTENSIONS_HEADER)
    )


def _handshake_request(request: Request) -> WsRequest:
    headers = Headers(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
    )
    return WsRequest(request.target.decode("latin-1"), headers)
