"""New connections let in a batch per loop iteration, so that a storm cannot starve delivery.

When tens of thousands of clients connect at once (a deploy, a network blip, a node that
restarts), each accepted connection reads a request, parses it, checks it and subscribes.
The kernel hands a worker up to its whole accept queue at once; were every one of those
handshakes run as soon as its bytes arrive, a published event would wait behind thousands of
them, and the heartbeats of the connections already open with it.

``Admission`` lets ``per_iteration`` new connections start in one loop iteration; the others
wait (their edge stops reading them) and start, in arrival order, in the iterations after,
each of which also runs whatever deliveries, heartbeats and broker replies are due. A waiting
connection costs its socket and nothing else; its client sees a slower handshake, not an error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

PER_ITERATION = 64


class Admitted(Protocol):
    """A new connection, as its edge holds it."""

    closed: bool

    def hold_back(self) -> None:
        """Stop reading until ``let_in``: its turn has not come."""

    def let_in(self) -> None:
        """Its turn came: read and answer its requests."""


class Admission:
    """At most ``per_iteration`` connections start per loop iteration; the rest queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_iteration: int = PER_ITERATION) -> None:
        self._loop = loop
        self.per_iteration = per_iteration
        self._waiting: deque[Admitted] = deque()
        self._started = 0  # connections started in the current iteration
        self._scheduled = False
        self.held_back = 0  # connections that had to wait for a later iteration, ever
        self.most_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, connection: Admitted) -> None:
        """A connection was accepted: start it now if this iteration has room, else queue it."""
        self._next_iteration_soon()
        if self._started < self.per_iteration and not self._waiting:
            self._started += 1
            return  # it reads as it would without a gate
        connection.hold_back()
        self._waiting.append(connection)
        self.held_back += 1
        self.most_waiting = max(self.most_waiting, len(self._waiting))

    def _next_iteration_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next_iteration)

    def _next_iteration(self) -> None:
        """A new iteration: a fresh batch, first from those waiting."""
        self._scheduled = False
        self._started = 0
        waiting = self._waiting
        while waiting and self._started < self.per_iteration:
            connection = waiting.popleft()
            if not connection.closed:
                self._started += 1
                connection.let_in()
        if waiting:
            self._next_iteration_soon()
