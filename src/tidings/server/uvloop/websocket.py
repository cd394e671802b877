"""The standalone edge's WebSocket framing: handshake, frames in, closing handshake.

The ``websockets`` sans-I/O ``ServerProtocol`` answers the handshake, reads client frames,
answers pings and runs the closing handshake; :class:`FrameSocket` assembles whole messages
for the core's :class:`WebSocketSession` and writes what the protocol wants sent.
"""

from __future__ import annotations

import logging

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State
from websockets.server import ServerProtocol

from tidings.protocol.fragments import Fragments, check_utf8
from tidings.protocol.http import build_error
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.server.core.logs import websocket_ending
from tidings.server.core.node import Node
from tidings.server.core.request import Request
from tidings.server.core.transports.websocket import WebSocketSession

quiet = logging.getLogger("tidings.ws.protocol")
quiet.setLevel(logging.WARNING)

DATA_OPCODES = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
# Close codes the connection fails with when the peer breaks RFC 6455, counted as refusals.
FAILURE_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "ws_protocol_error",
    CloseCode.INVALID_DATA: "ws_invalid_utf8",
    CloseCode.MESSAGE_TOO_BIG: "too_large",
}
HANDSHAKE_SLACK = 4096  # a whole message may exceed max_message_bytes by its JSON envelope


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


class FrameSocket(WebSocketSession):
    __slots__ = ("fragments", "protocol")

    def __init__(
        self, node: Node, protocol: FrameProtocol, identity: Identity = ANONYMOUS
    ) -> None:
        super().__init__(node, identity)
        self.protocol = protocol
        self.fragments: Fragments | None = None

    # reading

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.hub.loop.time()
        failed = self.protocol.parser_exc
        self.protocol.receive_data(data)
        if self.protocol.parser_exc is not failed:
            self._count_failure()
        for frame in self.protocol.events_received():
            # frames read before a close or a failure in the same data are not acted on
            if (
                isinstance(frame, Frame)
                and frame.opcode in DATA_OPCODES
                and self.protocol.state is State.OPEN
            ):
                self._on_data(frame)
        self._flush()
        self.accepting = self.accepting and self.protocol.state is State.OPEN

    def connection_lost(self, exc: Exception | None) -> None:
        # the close frame the server sent says why, even if the peer then went silent
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
            self.protocol.fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {error.start}")
            self._count_failure()
            return None
        if not frame.fin:
            return None
        payload = self.fragments.join()
        self.fragments = None
        return payload

    def _count_failure(self) -> None:
        """Count a connection failed for what the peer sent, by the close code it got."""
        sent = self.protocol.close_sent
        if sent is not None and sent.code in FAILURE_REASONS:
            self.node.stats.refused(FAILURE_REASONS[sent.code])

    def eof_received(self) -> bool | None:
        self.accepting = False
        self.protocol.receive_eof()
        self._flush()
        return None

    def _flush(self) -> None:
        """Write what the protocol wants sent; a close it started ends the transport."""
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif not self.transport.is_closing():
                self.transport.close()
        if self.protocol.state is State.CLOSED and not self.transport.is_closing():
            self.transport.close()

    def send_close(self, code: int, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()


def handshake(node: Node, request: Request) -> tuple[bytes, FrameProtocol | None]:
    """The handshake's answer, and the protocol object that reads frames once it is 101.

    A second protocol object, created already OPEN, reads the frames: the handshake's
    parser would keep the whole request alive for the life of the connection.
    """
    response = ServerProtocol(logger=quiet).accept(_handshake_request(request))
    if response.status_code != 101:
        reason = (response.body or b"invalid WebSocket handshake").decode("utf-8", "replace")
        return build_error(400, "invalid_field", reason.strip(), keep_alive=False), None
    max_size = node.settings.server.max_message_bytes + HANDSHAKE_SLACK
    protocol = FrameProtocol(state=State.OPEN, max_size=max_size, logger=quiet)
    return response.serialize(), protocol


def _handshake_request(request: Request) -> WsRequest:
    headers = Headers(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
    )
    return WsRequest(request.target.decode("latin-1"), headers)
