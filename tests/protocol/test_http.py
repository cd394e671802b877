"""HTTP/1.1 response bytes and the error body (docs/protocol.md section 8), read back with h11."""

from __future__ import annotations

import json
from http import HTTPStatus

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol.http import (
    build_error,
    build_response,
    error_body,
    is_header,
    status_line,
)

FINAL_STATUSES = [status.value for status in HTTPStatus if status.value >= 200]
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda name: name not in ("content-length", "content-type", "connection", "transfer-encoding")
)
header_values = st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789 ,;="/', max_size=20).map(
    str.strip
)


def read_response(raw: bytes) -> tuple[h11.Response, bytes, h11.Connection]:
    """Parse ``raw`` as the answer to a GET, the way a strict client would."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "localhost")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"unexpected {event!r}: the response is not framed")
    return response, body, client


def headers_of(response: h11.Response) -> dict[bytes, bytes]:
    return dict(response.headers)


@settings(max_examples=100)
@given(
    st.sampled_from(FINAL_STATUSES),
    st.binary(max_size=200),
    st.lists(st.tuples(header_names, header_values), max_size=3, unique_by=lambda h: h[0]),
    st.booleans(),
)
def test_any_response_is_framed_exactly(
    status: int, body: bytes, extra: list[tuple[str, str]], keep_alive: bool
) -> None:
    raw = build_response(
        status,
        body,
        headers=[(name.encode(), value.encode()) for name, value in extra],
        keep_alive=keep_alive,
    )
    response, received, client = read_response(raw)
    headers = headers_of(response)
    assert response.status_code == status
    assert response.reason == HTTPStatus(status).phrase.encode()
    for name, value in extra:
        assert headers[name.encode()] == value.encode()
    if status in (204, 304):
        assert received == b""
        assert b"content-length" not in headers
        assert b"content-type" not in headers
    else:
        assert received == body
        assert headers[b"content-length"] == str(len(body)).encode()
        assert headers[b"content-type"] == b"application/json"
    assert (headers.get(b"connection") == b"close") is not keep_alive
    assert client.their_state is (h11.DONE if keep_alive else h11.MUST_CLOSE)


def test_a_response_without_a_content_type() -> None:
    response, body, _ = read_response(build_response(200, b"ok", content_type=None))
    assert b"content-type" not in headers_of(response)
    assert body == b"ok"


def test_a_custom_content_type() -> None:
    response, _, _ = read_response(build_response(200, b"x", content_type=b"text/plain"))
    assert headers_of(response)[b"content-type"] == b"text/plain"


def test_an_unknown_status_still_has_a_reason() -> None:
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"


@settings(max_examples=100)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), st.text(max_size=30))
def test_error_body_is_exactly_code_and_message(message: str, code: str) -> None:
    assert json.loads(error_body(code, message)) == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [
        (400, "invalid_cursor", []),
        (405, "method_not_allowed", [(b"Allow", b"GET")]),
        (429, "rate_limited", [(b"Retry-After", b"1")]),
        (503, "unavailable", [(b"Retry-After", b"1")]),
    ],
)
def test_error_responses(status: int, code: str, headers: list[tuple[bytes, bytes]]) -> None:
    response, body, _ = read_response(build_error(status, code, "what to do", headers))
    assert response.status_code == status
    assert json.loads(body) == {"error": {"code": code, "message": "what to do"}}
    received = headers_of(response)
    for name, value in headers:
        assert received[name.lower()] == value


@pytest.mark.parametrize(
    ("key", "name", "same"),
    [
        (b"if-none-match", b"if-none-match", True),
        (b"If-None-Match", b"if-none-match", True),
        (b"IF-NONE-MATCH", b"if-none-match", True),
        (b"X-Forwarded-For", b"x-forwarded-for", True),
        (b"Content-Length", b"content-length", True),
        (b"Content-Lengths", b"content-length", False),
        (b"Content_Length", b"content-length", False),
        (b"If-None-Matcx", b"if-none-match", False),
        (b"Sec-WebSocket-Key1", b"sec-websocket-key", False),
        (b"", b"origin", False),
    ],
)
def test_a_header_name_is_recognised_in_any_case(key: bytes, name: bytes, same: bool) -> None:
    assert is_header(key, name) is same


TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@settings(max_examples=500)
@given(
    st.text(alphabet=TOKEN, min_size=1, max_size=20),
    st.sampled_from(
        [b"origin", b"if-none-match", b"last-event-id", b"x-forwarded-for", b"content-length"]
    ),
)
def test_is_header_agrees_with_lower(key: str, name: bytes) -> None:
    """For any token, the same answer as ``key.lower() == name``."""
    raw = key.encode()
    assert is_header(raw, name) == (raw.lower() == name)
    assert is_header(name.upper(), name)
