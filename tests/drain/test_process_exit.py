"""On SIGTERM ``tidings serve`` exits within ``drain_seconds`` and the grace, whatever clients do.

Two clients never go away: a WebSocket that ignores the server's close frame and an HTTP
request that is never finished. The process still exits when the window and the grace are up,
and says in its log how many connections it had and how many it dropped.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.serve_process import ServeProcess
from tests.server.support import client_frame, ws_handshake
from tidings.server.drain import GRACE_SECONDS

WINDOW = 2.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def node() -> Iterator[ServeProcess]:
    process = ServeProcess("--no-lab", env={"TIDINGS_SERVER_DRAIN_SECONDS": str(WINDOW)})
    try:
        yield process.wait_listening()
    finally:
        process.stop()


def stubborn_clients(port: int) -> list[socket.socket]:
    """A WebSocket that will never answer a close, and a request never finished."""
    websocket = socket.create_connection(("127.0.0.1", port), timeout=5)
    websocket.sendall(ws_handshake() + client_frame(b'{"op":"ping","ref":1}'))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = websocket.recv(4096)
        assert chunk, "the server closed the WebSocket handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    unfinished = socket.create_connection(("127.0.0.1", port), timeout=5)
    unfinished.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return [websocket, unfinished]


def terminate(node: ServeProcess) -> float:
    """SIGTERM by PID; seconds until the process exited."""
    started = time.monotonic()
    os.kill(node.process.pid, signal.SIGTERM)
    node.process.wait(timeout=WINDOW + GRACE_SECONDS + 10)
    return time.monotonic() - started


def test_the_process_exits_at_the_deadline_when_clients_never_leave(node: ServeProcess) -> None:
    clients = stubborn_clients(node.port)
    try:
        elapsed = terminate(node)
    finally:
        for client in clients:
            client.close()
    node.stop()  # joins the log reader
    assert node.process.returncode == 0, node.logs()
    assert WINDOW + GRACE_SECONDS - 0.2 <= elapsed < WINDOW + GRACE_SECONDS + 2.0, elapsed
    assert "draining: 2 connections" in node.logs(), node.logs()
    assert "2 dropped at the deadline" in node.logs(), node.logs()


def test_a_node_without_clients_exits_at_once(node: ServeProcess) -> None:
    elapsed = terminate(node)
    node.stop()
    assert node.process.returncode == 0, node.logs()
    assert elapsed < 1.5, elapsed
    assert "draining: 0 connections" in node.logs(), node.logs()


def test_a_second_signal_ends_the_drain_at_once(node: ServeProcess) -> None:
    clients = stubborn_clients(node.port)
    try:
        started = time.monotonic()
        os.kill(node.process.pid, signal.SIGTERM)
        node.wait_for_log("draining:")  # the first signal has been handled
        os.kill(node.process.pid, signal.SIGINT)
        node.process.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    node.stop()
    assert elapsed < WINDOW, elapsed
    assert "2 dropped at the deadline" in node.logs(), node.logs()
