"""What an edge lends the core for one request, and what a stream writes to.

An edge (the standalone uvloop server, or the ASGI mount) parses a request into a
:class:`Request`, hands the core an :class:`Exchange` to answer it through, and moves the
bytes. The core never sees a socket: it answers, holds (a long poll), or turns the exchange
into a stream (SSE) whose session writes to a :class:`Sink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from mypy_extensions import mypyc_attr

from tidings.protocol.identity import Identity
from tidings.server.core.request import Request
from tidings.server.core.response import Headers, Response


class Held(Protocol):
    """A request held open (a long poll): answered by itself, or expired by the deadline."""

    def cancel(self) -> None: ...

    def expire(self) -> None: ...


class Sink(Protocol):
    """Where a stream's bytes go: the socket's transport, or the ASGI edge's bounded queue.

    A sink calls its session's ``pause_writing`` once more than the write buffer limit is
    waiting, and ``resume_writing`` once it drained, like an asyncio transport.
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """End the stream once what was written has gone out."""

    def abort(self) -> None:
        """End the stream now; what is waiting is dropped."""

    def is_closing(self) -> bool: ...


class Session(Protocol):
    """A stream or WebSocket the edge feeds: the asyncio protocol callbacks it needs."""

    address: str
    transport: Sink

    @property
    def kind(self) -> str: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class Exchange(ABC):
    """One request being answered: the edge's side of it, which every handler calls.

    A base class, not a ``Protocol``: compiled, every call a handler makes on a native edge's
    exchange (the uvloop connection) is a call through the class's method table instead of a
    Python attribute lookup; the ASGI edge's exchange is an interpreted subclass, called as
    before.
    """

    __slots__ = ("closed", "current")

    # The request; None once it is answered.
    current: Request | None
    # The client is gone, or the exchange is over: nothing more can be sent.
    closed: bool

    @abstractmethod
    def admit(self, request: Request) -> None:
        """Count the connection under ``request``'s client, where a trusted proxy carries
        many clients; raises :class:`RateLimited` past the per-address limit."""

    @abstractmethod
    def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Headers | None = None,
        content_type: bytes | None = b"application/json",
    ) -> int:
        """Answer; how many bytes that put on the wire (0 if the client was gone)."""

    @abstractmethod
    def answer(self, response: Response) -> int:
        """Send a built (possibly shared) response; the bytes it put on the wire."""

    @abstractmethod
    def hold(self, held: Held, timeout: float) -> None:
        """Keep the request open until ``held`` answers it or ``timeout`` passes."""

    @abstractmethod
    def release(self) -> None:
        """The held request is answered or gone: forget it and its deadline."""

    @abstractmethod
    def accept_websocket(self, identity: Identity) -> Session | None:
        """Complete the WebSocket handshake and start the session that speaks for
        ``identity``; None if the handshake was refused (400)."""

    @abstractmethod
    def start_stream(self, session: Session, head: Response) -> Sink:
        """Answer with ``head`` (status and headers, no length) and hand the connection to
        ``session``, whose bytes the returned sink carries from now on."""
