"""The fault proxy itself does what the browser tests rely on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningServer
from tests.e2e.proxy import FaultProxy


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[FaultProxy]:
    running = FaultProxy(server.port).start()
    yield running
    running.stop()


def test_passes_requests_through(proxy: FaultProxy) -> None:
    assert httpx.get(f"http://127.0.0.1:{proxy.port}/healthz").status_code == 200


def test_refuses_websocket_upgrades_when_told(proxy: FaultProxy) -> None:
    with ws_client.connect(f"ws://127.0.0.1:{proxy.port}/ws") as socket:
        socket.send('{"op": "ping", "ref": 1}')
        assert '"pong"' in str(socket.recv(timeout=5))
    proxy.refuse_websocket = True
    with pytest.raises(InvalidStatus):
        ws_client.connect(f"ws://127.0.0.1:{proxy.port}/ws", open_timeout=5)
    assert proxy.refused_upgrades == 1


def test_buffers_event_streams_when_told(proxy: FaultProxy) -> None:
    proxy.buffer_streams = True
    url = f"http://127.0.0.1:{proxy.port}/sse?channel=news"
    with pytest.raises(httpx.ReadTimeout), httpx.stream("GET", url, timeout=1.0):
        pass  # not even the status line arrives
    assert proxy.buffered_streams == 1


def test_cuts_every_connection(proxy: FaultProxy) -> None:
    url = f"http://127.0.0.1:{proxy.port}/sse?channel=news"
    with httpx.stream("GET", url, timeout=5) as response:
        chunks = response.iter_bytes()
        assert next(chunks).startswith(b"retry:")
        assert proxy.cut_all() >= 2
        # an event stream has no length: a cut ends it (or errors), it never hangs
        with contextlib.suppress(httpx.HTTPError):
            assert b"".join(chunks) == b""


def test_records_the_first_request_head_of_each_connection(proxy: FaultProxy) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200  # same kept-alive connection
    assert [head.split(b" ", 2)[1] for head in proxy.request_heads] == [b"/healthz"]


def test_one_request_per_connection_shows_every_request(proxy: FaultProxy) -> None:
    proxy.one_request_per_connection = True
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}") as client:
        first = client.get("/healthz")
        assert client.get("/readyz").status_code == 200
    assert first.headers["connection"] == "close"
    paths = [head.split(b" ", 2)[1] for head in proxy.request_heads]
    assert paths == [b"/healthz", b"/readyz"]
    with ws_client.connect(f"ws://127.0.0.1:{proxy.port}/ws") as socket:
        socket.send('{"op": "ping", "ref": 1}')
        assert '"pong"' in str(socket.recv(timeout=5))
