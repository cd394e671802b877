"""HTTP/1.1 response bytes and the JSON error body of docs/protocol.md section 8."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

import orjson

_REASONS = {status.value: status.phrase for status in HTTPStatus}

JSON = b"application/json"


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("ascii")


def build_response(
    status: int,
    body: bytes = b"",
    content_type: bytes | None = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    """A complete response with Content-Length; 204 and 304 carry no body."""
    parts = [status_line(status)]
    if status not in (204, 304):
        if content_type is not None:
            parts.append(b"Content-Type: " + content_type + b"\r\n")
        parts.append(b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n")
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if status not in (204, 304):
        parts.append(body)
    return b"".join(parts)


def build_error(
    status: int,
    code: str,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    return build_response(status, error_body(code, message), JSON, headers, keep_alive)


def is_header(key: bytes, name: bytes) -> bool:
    """Whether the header name ``key``, as a client sent it, is ``name``, in any case.

    ``name`` is lower-case letters, digits and ``-``; ``key`` is a token (both edges' parsers
    refuse any other name). A byte of ``key`` with the 0x20 bit set equals a byte of ``name``
    only if it is that byte or its upper case: the other bytes it could be (0x10-0x19 for a
    digit, CR for ``-``) are not in tokens. Compiled, this costs a fraction of
    ``key.lower() == name``, a method call that makes a new ``bytes``.
    """
    if len(key) != len(name):
        return False
    return all(key[index] | 0x20 == name[index] for index in range(len(name)))
