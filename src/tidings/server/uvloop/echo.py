"""An echo ``/ws`` for the Autobahn suite: ``Server(settings, socket_class=EchoSocket)``.

For testing only: an echo speaks none of the wire contract, so no setting turns it on. The
Autobahn fuzzing client expects an echo server, and the point of running it is to test our
WebSocket edge, so the echo is the real connection with one thing changed, what it does
with a whole message. Handshake, the ``websockets`` protocol object and its size limit,
permessage-deflate (``server.ws_deflate``: a negotiated extension inflates what the client
sends, and the echo goes back compressed through the same protocol object), fragment
assembly, UTF-8 checks, ping and pong, and the closing handshake are the ones ``/ws`` uses.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode

from tidings.server.uvloop.websocket import FrameSocket


class EchoSocket(FrameSocket):
    __slots__ = ()

    def _on_data(self, frame: Frame) -> None:
        text = frame.opcode is Opcode.TEXT if self.fragments is None else self.fragments.text
        payload = self._assemble(frame)
        if payload is None:
            return
        # through the protocol object, so echoes and its pongs leave in the order they arose
        if text:
            self._frames().send_text(payload)
        else:
            self._frames().send_binary(payload)

    def pause_writing(self) -> None:
        # An echo's output is its own input: a peer that reads slowly is held back by
        # reading less from it, not by the slow-consumer policy meant for fan-out.
        self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()  # type: ignore[attr-defined]
