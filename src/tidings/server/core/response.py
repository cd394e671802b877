"""A complete HTTP answer, as the core builds it and either edge writes it.

The standalone edge writes HTTP/1.1 bytes; the ASGI edge sends the status, headers and
body as messages. An answer shared by many requests (every caught-up long poll woken by
one event) is one ``Response`` whose HTTP/1.1 encoding is built once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.protocol.http import JSON, build_response

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=list)
    content_type: bytes | None = JSON
    _kept_alive: bytes | None = None  # the keep-alive HTTP/1.1 encoding, once built

    def http11(self, keep_alive: bool) -> bytes:
        """The response as HTTP/1.1 bytes, with ``Content-Length``."""
        if not keep_alive:
            return build_response(self.status, self.body, self.content_type, self.headers, False)
        if self._kept_alive is None:
            self._kept_alive = build_response(
                self.status, self.body, self.content_type, self.headers, True
            )
        return self._kept_alive

    def header_pairs(self) -> Headers:
        """Every header the edge must send, ``Content-Type`` included; 204/304 carry none."""
        if self.status in (204, 304) or self.content_type is None:
            return self.headers
        return [(b"Content-Type", self.content_type), *self.headers]
