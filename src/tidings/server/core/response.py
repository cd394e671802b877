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


ANSWERS_KEPT = 1024
ANSWER_BYTES_KEPT = 4 * 1024 * 1024


class Answers:
    """Built answers by the question they answer, bounded in count and body bytes (once
    past either bound, emptied and filled again).

    A key names everything its answer holds. The polls key theirs by
    ``(channel, epoch, after, upto)`` for the events of one channel after offset ``after`` up
    to ``upto``, which history never changes, and by ``(status, cursor list)`` for an answer
    without events.
    """

    __slots__ = ("_answers", "_size")

    def __init__(self) -> None:
        self._answers: dict[tuple[object, ...], Response] = {}
        self._size = 0

    def get(self, key: tuple[object, ...]) -> Response | None:
        return self._answers.get(key)

    def keep(self, key: tuple[object, ...], response: Response) -> Response:
        if len(self._answers) >= ANSWERS_KEPT or self._size > ANSWER_BYTES_KEPT:
            self._answers.clear()
            self._size = 0
        self._answers[key] = response
        self._size += len(response.body)
        return response
