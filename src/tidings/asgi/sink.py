"""A bounded queue between the core's writes and ASGI's ``send``.

ASGI has no ``pause_writing``: a ``send`` just waits while the client is slow. So a stream
writes into this sink, and one writer task per stream sends what is queued. Past
``write_buffer_limit`` bytes waiting, the sink calls the session's ``pause_writing``, whose
slow-consumer policy then acts as on the standalone edge; ``resume_writing`` follows once
the queue drained to a quarter of it. Nothing grows without bound.

What waits is counted as an asyncio transport counts its buffer: a transport hands a write
to its socket at once and buffers only what the socket did not take. Here a write that finds
the writer idle goes to ``send`` at once, so it is not waiting; what is written while a
``send`` is under way (the ASGI server has not taken the last chunk) is. A batch larger than
the limit thus reaches a client that keeps up, as it does on the standalone edge.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tidings.server.core.exchange import Session


class QueueSink:
    __slots__ = (
        "_closing",
        "_ended",
        "_handed",
        "_limit",
        "_paused",
        "_queue",
        "_queued",
        "_ready",
        "_sending",
        "ended",
        "gone",
        "peer",
        "session",
    )

    def __init__(self, session: Session, limit: int, peer: tuple[str, int] | None = None) -> None:
        self.session = session
        self.peer = peer  # the client's (host, port), as the ASGI server gives it
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._handed = 0  # bytes queued that the idle writer takes at once: not waiting
        self._sending = False  # the writer holds a chunk the ASGI server has not taken yet
        self._paused = False
        self._closing = False  # close(): end once the queue is sent
        self._ended = False  # abort(), or the client left: end now
        self.gone = False  # the client left: nothing more can be sent
        self._ready = asyncio.Event()
        self.ended = asyncio.Event()  # aborted, or the client left: the writer stops at once

    # the core's side

    def write(self, data: bytes) -> None:
        if self._closing or self._ended:
            return
        if not self._sending and not self._queue:
            self._handed = len(data)
        self._queue.append(data)
        self._queued += len(data)
        self._ready.set()
        if not self._paused and self._queued - self._handed > self._limit:
            self._paused = True
            self.session.pause_writing()

    def close(self) -> None:
        self._closing = True
        self._ready.set()

    def abort(self) -> None:
        self._ended = True
        self._queue.clear()
        self._queued = self._handed = 0
        self._ready.set()
        self.ended.set()

    def is_closing(self) -> bool:
        return self._closing or self._ended

    def get_write_buffer_size(self) -> int:
        """Bytes written and waiting for the ASGI server to take what it was given."""
        return self._queued - self._handed

    def get_extra_info(self, name: str, default: object = None) -> object:
        """``peername``, as an asyncio transport gives it; ASGI lends nothing else."""
        return self.peer if name == "peername" and self.peer is not None else default

    # the writer's side

    async def next_chunk(self) -> bytes | None:
        """Everything queued, joined; None once the stream is over."""
        while not self._queue:
            if self._ended or self._closing:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self._ended:
            return None
        chunk = b"".join(self._queue)
        self._queue.clear()
        self._queued = self._handed = 0
        self._sending = True
        return chunk

    def sent(self) -> None:
        """A chunk went out: a paused session may write again."""
        self._sending = False
        if self._paused and self._queued <= self._limit // 4:
            self._paused = False
            self.session.resume_writing()

    def lost(self) -> None:
        """The client is gone."""
        self.gone = True
        self._ended = True
        self._ready.set()
        self.ended.set()
