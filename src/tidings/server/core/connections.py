"""The node's open connections (HTTP, SSE, WebSocket), in a set that a drain can watch.

A connection that opens while the node drains (a stream whose start awaited the broker) is
asked back as soon as it is set up, and the drain learns when the last one is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Connection(Protocol):
    """An open connection: a request-answering HTTP connection, a stream or a WebSocket.

    ``kind`` names its technique in metrics (``websocket``, ``sse``, ``long_poll`` while a
    poll is held, ``http`` otherwise).
    """

    @property
    def kind(self) -> str: ...


class Watcher(Protocol):
    def late(self, connection: Connection) -> None:
        """``connection`` opened while the watcher was already at work."""

    def emptied(self) -> None:
        """The last connection is gone."""


class Connections:
    __slots__ = ("_open", "_watcher")

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self._watcher: Watcher | None = None

    def add(self, connection: Connection) -> None:
        self._open.add(connection)
        if self._watcher is not None:
            self._watcher.late(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)
        if self._watcher is not None and not self._open:
            self._watcher.emptied()

    def __contains__(self, connection: object) -> bool:
        return connection in self._open

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def watch(self, watcher: Watcher) -> None:
        self._watcher = watcher
        if not self._open:
            watcher.emptied()
