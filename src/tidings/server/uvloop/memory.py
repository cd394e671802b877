"""An in-memory transport for the standalone edge: no socket, no event loop I/O.

A connection made with ``edge.protocol_factory()`` and given one with ``connection_made``
writes into ``written``; the bytes a client would send are fed to
``transport.protocol.data_received``, which is the connection or, once it became a stream or
a WebSocket, what it handed itself over to. Tests of the edge's rules and
``bench/edge_cost.py`` (the Python cost of a delivery) run on it.
"""

from __future__ import annotations

from typing import Any


class MemoryTransport:
    """Keeps what is written and the protocol it carries; reads nothing of its own."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None
        self.closing = False
        self.reading = True  # as a transport starts: pause_reading and resume_reading turn it
        self._peer = peer

    def output(self) -> bytes:
        """Everything written so far, as one string of bytes."""
        return b"".join(self.written)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol
