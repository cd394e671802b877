"""A parsed HTTP request as the routes see it."""

from __future__ import annotations

from typing import Final, TypeVar

from tidings.protocol.http import is_header
from tidings.protocol.identity import ANONYMOUS, Identity
from tidings.protocol.query import Query, parse_query

Parsed = TypeVar("Parsed")


def keep_for_target(
    kept: dict[bytes, Parsed], target: bytes, parsed: Parsed, most: int, target_bytes: int
) -> None:
    """Keep what was read from a request target, for the next request of the same target
    (under polling most requests repeat one of a few): only a target shorter than
    ``target_bytes``, and at most ``most`` of them (a full cache starts over), so that what
    is kept stays within ``most * target_bytes`` bytes of keys."""
    if len(target) < target_bytes:
        if len(kept) >= most:
            kept.clear()
        kept[target] = parsed


# Targets split into path and query, kept: a few megabytes at most.
SPLITS_KEPT: Final = 4096
SPLIT_TARGET_BYTES: Final = 512
_splits: Final[dict[bytes, tuple[str, str]]] = {}


def split_target(target: bytes) -> tuple[str, str]:
    """A target's path and query string (after the first ``?``), read as latin-1."""
    split = _splits.get(target)
    if split is None:
        path, _, query = target.decode("latin-1").partition("?")
        split = (path, query)
        keep_for_target(_splits, target, split, SPLITS_KEPT, SPLIT_TARGET_BYTES)
    return split


class Request:
    """One request: what the client sent, and what the core learnt of it (its identity).

    A plain class with one ``__init__``: every HTTP request makes one. Its target's path and
    query string come from ``split_target``, which keeps the splits of recent targets.
    """

    __slots__ = (
        "body",
        "headers",
        "hooked",
        "http_version",
        "identity",
        "keep_alive",
        "leftover",
        "method",
        "path",
        "peer",
        "query_string",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        peer: str,
        *,
        upgrade: bool = False,
        http_version: str = "1.1",
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.peer = peer
        self.path, self.query_string = split_target(target)
        self.upgrade = upgrade
        self.leftover = b""  # what followed an Upgrade request, for the protocol it starts
        self.identity: Identity = ANONYMOUS  # whose token came with it, once verified
        self.hooked = False  # the identity is the application hook's decision
        self.http_version = http_version

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} from {self.peer})"

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower-case), repeated values joined by ``, ``."""
        joined = self.raw_header(name)
        return None if joined is None else joined.decode("latin-1")

    def raw_header(self, name: bytes) -> bytes | None:
        """``header``, as the bytes the client sent."""
        joined = None
        for key, value in self.headers:  # a loop, not a comprehension: no frame of its own
            if is_header(key, name):
                joined = value if joined is None else joined + b", " + value
        return joined

    def query(self) -> Query:
        return parse_query(self.query_string)

    def is_loopback(self) -> bool:
        return self.peer.startswith("127.") or self.peer in ("::1", "localhost")
