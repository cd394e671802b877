"""The standalone edge's reader of plain request heads (``server/uvloop/_heads.c``).

It must take only what httptools (llhttp) accepts, and give what llhttp gives: the method,
the target and the headers as sent, the connection kept. Every head it takes here is also
fed to httptools and the two compared; what it declines, httptools reads at the edge
(tests/server/test_http.py covers those requests end to end, with and without this reader).

The reader is built with the compiled modules (``TIDINGS_COMPILE=1``); the interpreted pass
runs without it, as a server where nothing was compiled does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _reader() -> ModuleType | None:
    try:
        return importlib.import_module("tidings.server.uvloop._heads")
    except ImportError:
        return None


heads = _reader()
pytestmark = pytest.mark.skipif(
    heads is None, reason="the head reader is not built here (interpreted, TIDINGS_COMPILE=0)"
)

Head = tuple[str, bytes, list[tuple[bytes, bytes]], int]


def read(data: bytes, start: int = 0) -> Head | None:
    assert heads is not None
    result: Head | None = heads.read_head(data, start)
    return result


class _Message:
    """What llhttp makes of one message, read the way the edge reads it."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.completed: list[tuple[str, bytes, list[tuple[bytes, bytes]], bool, bool]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.completed.append(
            (
                self.parser.get_method().decode("latin-1"),
                self.url,
                self.headers,
                self.parser.should_keep_alive(),
                self.parser.should_upgrade(),
            )
        )


def llhttp(data: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes]], bool, bool] | str:
    message = _Message()
    try:
        message.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return "upgrade"
    except httptools.HttpParserError:
        return "refused"
    if len(message.completed) != 1:
        return "incomplete"
    return message.completed[0]


def assert_as_llhttp(data: bytes) -> Head | None:
    """Read ``data``; if the reader takes a head, llhttp must read the same from its bytes."""
    head = read(data)
    if head is not None:
        method, target, headers, end = head
        assert llhttp(data[:end]) == (method, target, headers, True, False), data
    return head


POLL = b"GET /poll?channel=news&since=abc.4 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER = (
    b"GET /poll?channel=news&since=abc.4 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="156", "Not)A;Brand";v="24"\r\n'
    b"Accept: */*\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    b'If-None-Match: "abc.4"\r\n'
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=abc; theme=dark\r\n"
    b"\r\n"
)


def test_a_poll_is_read_whole() -> None:
    head = assert_as_llhttp(POLL)
    assert head == (
        "GET",
        b"/poll?channel=news&since=abc.4",
        [(b"Host", b"127.0.0.1:8080")],
        len(POLL),
    )


def test_a_browser_request_keeps_its_headers_as_sent() -> None:
    head = assert_as_llhttp(BROWSER)
    assert head is not None
    _, _, headers, end = head
    assert end == len(BROWSER)
    assert headers[1] == (b"Connection", b"keep-alive")
    assert headers[2] == (b"sec-ch-ua", b'"Chromium";v="156", "Not)A;Brand";v="24"')
    assert [name for name, _ in headers][-1] == b"Cookie"
    assert len(headers) == 9


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_the_methods_without_a_body_are_read(method: str) -> None:
    data = f"{method} /x HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    head, again = assert_as_llhttp(data), read(data)
    assert head is not None and again is not None
    assert head[0] == method
    assert head[0] is again[0]  # one string per method, not one per request


def test_a_head_without_headers_is_read() -> None:
    assert assert_as_llhttp(b"GET / HTTP/1.1\r\n\r\n") == ("GET", b"/", [], 18)


def test_whitespace_before_a_value_is_not_part_of_it() -> None:
    head = assert_as_llhttp(b"GET / HTTP/1.1\r\nHost:\t \texample.com\r\nX-A:b c\r\n\r\n")
    assert head is not None
    assert head[2] == [(b"Host", b"example.com"), (b"X-A", b"b c")]


def test_reading_starts_at_the_offset_given_and_stops_after_the_head() -> None:
    data = POLL + POLL + b"GET /hea"
    first = read(data, 0)
    assert first is not None and first[3] == len(POLL)
    second = read(data, first[3])
    assert second is not None and second[3] == 2 * len(POLL)
    assert second[:3] == first[:3]
    assert read(data, second[3]) is None  # not complete yet: httptools waits for the rest


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"POST /api/publish HTTP/1.1\r\nHost: a\r\n\r\n", id="POST"),
        pytest.param(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n", id="DELETE"),
        pytest.param(b"get / HTTP/1.1\r\n\r\n", id="lower-case method"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="HTTP/1.0"),
        pytest.param(b"GET / HTTP/2.0\r\n\r\n", id="HTTP/2.0"),
        pytest.param(b"GET http://a/ HTTP/1.1\r\n\r\n", id="absolute form"),
        pytest.param(b"OPTIONS * HTTP/1.1\r\n\r\n", id="asterisk form"),
        pytest.param(b"GET  / HTTP/1.1\r\n\r\n", id="two spaces"),
        pytest.param(b"GET / HTTP/1.1\n\n", id="bare LF"),
        pytest.param(b"\r\nGET / HTTP/1.1\r\n\r\n", id="empty line first"),
        pytest.param(b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", id="UTF-8 in the target"),
        pytest.param(b"GET /a\tb HTTP/1.1\r\n\r\n", id="tab in the target"),
        pytest.param(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="Content-Length"),
        pytest.param(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", id="upgrade"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", id="Upgrade alone"),
        pytest.param(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", id="Connection: close"),
        pytest.param(b"GET / HTTP/1.1\r\nconnection: CLOSE\r\n\r\n", id="close, any case"),
        pytest.param(b"GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n", id="proxy close"),
        pytest.param(b"GET / HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n", id="Connection list"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a \r\n\r\n", id="space after a value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", id="empty value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", id="space before the colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", id="folded value"),
        pytest.param(b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n", id="UTF-8 in a value"),
        pytest.param(b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", id="NUL in a value"),
        pytest.param(b"GET / HTTP/1.1\r\nX(A): b\r\n\r\n", id="not a token"),
        pytest.param(b"GET / HTTP/1.1\r\n: b\r\n\r\n", id="empty name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", id="incomplete"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r", id="last CR only"),
        pytest.param(b"GET / HTTP/1.1\r", id="cut in the request line"),
        pytest.param(b"", id="nothing"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(65)) + b"\r\n",
            id="65 headers",
        ),
    ],
)
def test_what_is_not_plain_is_left_to_httptools(data: bytes) -> None:
    assert read(data) is None


def test_64_headers_are_read() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(64)) + b"\r\n"
    head = assert_as_llhttp(data)
    assert head is not None and len(head[2]) == 64


def test_keep_alive_in_any_case_is_read() -> None:
    for value in (b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE"):
        for name in (b"Connection", b"connection", b"Proxy-Connection"):
            assert assert_as_llhttp(b"GET / HTTP/1.1\r\n%s: %s\r\n\r\n" % (name, value))


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_in_every_place_reads_as_llhttp_reads_it(byte: int) -> None:
    """One byte in the target, in a name and in a value: taken only where llhttp agrees."""
    one = bytes([byte])
    for data in (
        b"GET /a" + one + b"b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-" + one + b"A: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: b" + one + b"c\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: " + one + b"\r\n\r\n",
    ):
        assert_as_llhttp(data)
    for at in range(17):  # long runs are read eight bytes at a time: the byte in each place
        assert_as_llhttp(b"GET /" + b"a" * at + one + b"b" * 12 + b" HTTP/1.1\r\n\r\n")
        assert_as_llhttp(b"GET / HTTP/1.1\r\nX-A: " + b"x" * at + one + b"y" * 12 + b"\r\n\r\n")


def test_the_arguments_are_checked() -> None:
    assert heads is not None
    with pytest.raises(TypeError):
        heads.read_head("GET / HTTP/1.1\r\n\r\n", 0)
    with pytest.raises(ValueError):
        heads.read_head(POLL, len(POLL) + 1)
    with pytest.raises(ValueError):
        heads.read_head(POLL, -1)
    assert heads.read_head(POLL, len(POLL)) is None


PIECES = [
    b"GET ",
    b"HEAD ",
    b"OPTIONS ",
    b"POST ",
    b"/",
    b"/poll?channel=a&since=1",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"Host: a\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: close\r\n",
    b"Upgrade: websocket\r\n",
    b"Content-Length: 0\r\n",
    b"X-A:  b \r\n",
    b"X-A:\tb\tc\r\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b"\n",
    b"\r",
]

names = st.sampled_from(
    [
        *(b"Host", b"Connection", b"connection", b"Proxy-Connection", b"Upgrade"),
        *(b"Content-Length", b"Transfer-Encoding", b"Keep-Alive", b"If-None-Match", b"X-A"),
    ]
)
values = st.one_of(
    st.sampled_from([b"keep-alive", b"close", b"Keep-Alive", b"upgrade", b"0", b"", b"a b"]),
    st.binary(max_size=8),
)
separators = st.sampled_from([b": ", b":", b":  ", b":\t", b" : "])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET ", b"HEAD ", b"OPTIONS ", b"DELETE "]))
    target = b"/" + draw(st.binary(max_size=12))
    version = draw(st.sampled_from([b" HTTP/1.1\r\n"] * 4 + [b" HTTP/1.0\r\n", b"  HTTP/1.1\r\n"]))
    lines = [
        draw(names) + draw(separators) + draw(values) + b"\r\n"
        for _ in range(draw(st.integers(0, 5)))
    ]
    return method + target + version + b"".join(lines) + b"\r\n"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(BROWSER)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(["insert", "replace", "delete", "piece"]))
        if what == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=1))
        elif what == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif what == "delete" and at < len(data):
            del data[at]
        else:
            data[at:at] = draw(st.sampled_from(PIECES))
    return bytes(data)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(requests(), mutated()))
def test_any_head_taken_is_read_as_llhttp_reads_it(data: bytes) -> None:
    assert_as_llhttp(data)
