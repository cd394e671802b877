"""A parsed HTTP request as the routes see it."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.protocol.query import Query, parse_query


@dataclass(slots=True)
class Request:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    peer: str
    path: str = ""
    query_string: str = ""
    upgrade: bool = False
    leftover: bytes = b""
    identity: Identity = ANONYMOUS  # whose token came with it, once verified
    hooked: bool = False  # the identity is the application hook's decision
    http_version: str = "1.1"

    def __post_init__(self) -> None:
        path, _, query = self.target.decode("latin-1").partition("?")
        self.path = path
        self.query_string = query

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower-case), repeated values joined by ``, ``."""
        values = [value for key, value in self.headers if key.lower() == name]
        return b", ".join(values).decode("latin-1") if values else None

    def query(self) -> Query:
        return parse_query(self.query_string)

    def is_loopback(self) -> bool:
        return self.peer.startswith("127.") or self.peer in ("::1", "localhost")
