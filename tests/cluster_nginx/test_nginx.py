"""deploy/nginx.conf run for real: Debian's nginx in front of three ``tidings serve`` nodes.

The nodes share the Redis on 127.0.0.1:6379 under a key prefix of this module's own (deleted
afterwards). The configuration is rendered with the test's ports only (and the nginx prefix
is a temporary directory, which the file's relative paths already expect), so what runs here
is the file the README tells people to use. Skips loudly without nginx or Redis; under
CI=true those are failures.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.redis.support import REDIS_URL, require_redis
from tests.serve_process import ServeProcess

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
FAST_ENV = {"TIDINGS_SERVER_SSE_RETRY_MS": "200", "TIDINGS_SERVER_DRAIN_SECONDS": "0.2"}
CONF_PORTS = ("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003")
CONF_LISTEN = "listen 127.0.0.1:8080;"
SSE_LOCATION = "location = /sse {"
DEADLINE = 5.0
TAG = "\n        add_header X-Upstream $upstream_addr always;"

pytestmark = pytest.mark.timeout(60)


def nginx_binary() -> str:
    """The nginx executable. Skip, loudly, when it is missing; under CI=true fail."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found:
        return found
    message = "NGINX IS MISSING: the nginx cluster tests did not run (apt-get install nginx-light)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node(ServeProcess):
    """``tidings serve --port 0 --broker <redis with prefix>``; stderr drained in a thread."""

    def __init__(self, broker: str) -> None:
        super().__init__("--no-lab", "--broker", broker, env=FAST_ENV)
        self.wait_listening()


def render(
    upstreams: list[int], listen: int, tag_upstream: bool = False, backup_last: bool = False
) -> str:
    """deploy/nginx.conf with the test's ports in place of 8001-8003 and 8080.

    One line is added: /sse ignores the node's ``X-Accel-Buffering: no``, so that the stream
    arriving unbuffered proves the configuration's own ``proxy_buffering off``. With fewer
    than three upstreams the extra ``server`` lines are left out; ``tag_upstream`` adds an
    ``X-Upstream`` header naming the node that answered; ``backup_last`` makes the last node
    a backup, which nginx uses only while the others are down.
    """
    text = CONF.read_text()
    assert text.count(SSE_LOCATION) == 1, f"{SSE_LOCATION!r} must occur once in {CONF}"
    text = text.replace(SSE_LOCATION, SSE_LOCATION + "\n proxy_ignore_headers X-Accel-Buffering;")
    for unused in CONF_PORTS[len(upstreams) :]:
        text = re.sub(rf"\n *server {re.escape(unused)}[^\n]*", "", text)
    for placeholder, port in [*zip(CONF_PORTS, upstreams, strict=False), (CONF_LISTEN, listen)]:
        assert text.count(placeholder) == 1, f"{placeholder!r} must occur once in {CONF}"
        address = f"127.0.0.1:{port}"
        text = text.replace(
            placeholder, f"listen {address};" if placeholder == CONF_LISTEN else address
        )
    if tag_upstream:
        text = text.replace(f"listen 127.0.0.1:{listen};", f"listen 127.0.0.1:{listen};" + TAG)
    if backup_last:
        last = f"server 127.0.0.1:{upstreams[-1]} "
        assert text.count(last) == 1, f"{last!r} must occur once"
        text = text.replace(last, last + "backup ")
    return text


class Nginx:
    """``nginx -p <tmp> -c <rendered conf> -g 'daemon off;'``, stopped by PID."""

    def __init__(
        self,
        binary: str,
        prefix: Path,
        upstreams: list[int],
        tag_upstream: bool = False,
        backup_last: bool = False,
    ) -> None:
        (prefix / "logs").mkdir(parents=True)
        self.prefix = prefix
        self.port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(render(upstreams, self.port, tag_upstream, backup_last))
        command = [binary, "-p", str(prefix), "-e", "stderr", "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=20)
        assert checked.returncode == 0, f"nginx -t rejected the configuration:\n{checked.stderr}"
        self._stderr = (prefix / "logs" / "stderr.log").open("w")
        self.process = subprocess.Popen(
            [*command, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"nginx did not start:\n{self.errors()}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def errors(self) -> str:
        logs = self.prefix / "logs"
        files = (logs / "stderr.log", logs / "error.log")
        return "".join(path.read_text() for path in files if path.exists())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGQUIT)  # graceful: workers finish and exit
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
        self._stderr.close()


def delete_keys(prefix: str) -> None:
    """SCAN MATCH <prefix>* and DEL every key the nodes made."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    """Three nodes on the shared Redis, under a prefix of this module's own."""
    nginx_binary()  # no nodes to start when the tests that need them would skip
    require_redis()
    prefix = "test-nginx-" + uuid.uuid4().hex[:12]
    started: list[Node] = []
    try:
        for _ in range(3):
            started.append(Node(f"{REDIS_URL}?prefix={prefix}"))
        yield started
    finally:
        for node in started:
            node.stop()
        delete_keys(prefix)


@pytest.fixture(scope="module")
def nginx(nodes: list[Node], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    proxy = Nginx(nginx_binary(), tmp_path_factory.mktemp("nginx"), [n.port for n in nodes])
    yield proxy
    proxy.stop()


def channel() -> str:
    return "nginx-" + uuid.uuid4().hex[:8]


def publish(nginx: Nginx, name: str, data: Any) -> str:
    """Publish through nginx (so through whichever node it picks); return the cursor."""
    answer = httpx.post(
        f"{nginx.url}/api/publish", json={"channel": name, "data": data}, timeout=DEADLINE
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_configuration_keeps_streams_unbuffered_and_timeouts_above_the_servers() -> None:
    text = CONF.read_text()
    blocks = dict(re.findall(r"location = (/\w+) \{(.*?)\n        \}", text, re.S))
    for directive in ("proxy_buffering off;", "proxy_cache off;"):
        assert directive in blocks["/sse"]
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_http_version 1.1;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in blocks["/ws"]
    assert "proxy_next_upstream error timeout http_503;" in text  # a draining node's 503
    assert "$proxy_add_x_forwarded_for" in text

    def read_timeout(location: str) -> int:
        match = re.search(r"proxy_read_timeout (\d+)s;", blocks[location])
        assert match, f"{location} sets no proxy_read_timeout"
        return int(match[1])

    assert read_timeout("/sse") > 15  # heartbeat_seconds
    assert read_timeout("/ws") > 15
    assert read_timeout("/poll") > 30  # max_poll_seconds


def test_sse_through_nginx_delivers_each_event_as_it_is_published(nginx: Nginx) -> None:
    name = channel()
    lines: queue.Queue[str | None] = queue.Queue()
    opened = threading.Event()
    headers: dict[str, str] = {}
    stop = threading.Event()

    def read() -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(DEADLINE, read=30)) as client,
                client.stream("GET", f"{nginx.url}/sse", params={"channel": name}) as answer,
            ):
                headers.update(answer.headers)
                opened.set()
                for line in answer.iter_lines():
                    lines.put(line)
                    if stop.is_set():
                        return
        except httpx.HTTPError as error:  # reported by the test thread's deadline
            lines.put(f"(the stream failed: {error!r})")
        finally:
            opened.set()
            lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(DEADLINE), (
        f"the SSE stream's headers did not arrive within {DEADLINE} s: nginx buffered it?"
    )
    assert headers.get("content-type", "").startswith("text/event-stream"), headers

    def next_data() -> str:
        deadline = time.monotonic() + DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"no event within {DEADLINE} s: nginx buffered the stream?\n{nginx.errors()}"
                ) from None
            assert line is not None, "the SSE stream ended"
            if line.startswith("data: "):
                return line[len("data: ") :]

    # The stream's opening id: line tells it is subscribed; only then publish.
    deadline = time.monotonic() + DEADLINE
    while not (lines.get(timeout=max(deadline - time.monotonic(), 0.001)) or "").startswith("id: "):
        pass
    try:
        for number in range(5):
            published = time.monotonic()
            publish(nginx, name, {"n": number})
            assert json.loads(next_data()) == {"n": number}
            assert time.monotonic() - published < DEADLINE
    finally:
        stop.set()
        publish(nginx, name, {"n": "bye"})  # wakes the reader so that it returns
        reader.join(timeout=DEADLINE)


def test_websocket_through_nginx_subscribes_and_receives(nginx: Nginx) -> None:
    name = channel()
    with ws_connect(
        f"ws://127.0.0.1:{nginx.port}/ws", open_timeout=DEADLINE, close_timeout=2
    ) as ws:
        ws.send(json.dumps({"op": "subscribe", "channel": name, "ref": 1}))
        answer = json.loads(ws.recv(timeout=DEADLINE))
        assert answer["op"] == "subscribed" and answer["ref"] == 1, answer
        ws.send(json.dumps({"op": "ping", "ref": 2}))
        assert json.loads(ws.recv(timeout=DEADLINE)) == {"op": "pong", "ref": 2}
        cursors = [publish(nginx, name, {"n": number}) for number in range(3)]
        received = [json.loads(ws.recv(timeout=DEADLINE)) for _ in cursors]
        assert [m["op"] for m in received] == ["event"] * 3
        assert [m["data"] for m in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [m["id"] for m in received] == cursors


def test_long_poll_through_nginx_is_held_and_answered_on_publish(nginx: Nginx) -> None:
    name = channel()
    start = httpx.get(f"{nginx.url}/poll", params={"channel": name}, timeout=DEADLINE)
    assert start.status_code == 200, start.text
    since = start.json()["cursor"]
    answers: queue.Queue[httpx.Response | BaseException] = queue.Queue()

    def hold() -> None:
        try:
            answers.put(
                httpx.get(
                    f"{nginx.url}/poll",
                    params={"channel": name, "since": since, "timeout": 20},
                    timeout=30,
                )
            )
        except BaseException as error:  # handed to the test thread
            answers.put(error)

    started = time.monotonic()
    threading.Thread(target=hold, daemon=True).start()
    time.sleep(1.0)
    assert answers.empty(), "the long poll was answered before anything was published"
    cursor = publish(nginx, name, {"held": True})
    answer = answers.get(timeout=DEADLINE)
    assert not isinstance(answer, BaseException), answer
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [e["data"] for e in body["events"]] == [{"held": True}]
    assert body["cursor"] == cursor
    assert 1.0 <= elapsed < 1.0 + DEADLINE


def test_a_dead_node_is_skipped_for_gets(nodes: list[Node], tmp_path: Path) -> None:
    """One upstream port has nothing listening: every GET still succeeds, via another node."""
    dead = free_port()
    proxy = Nginx(nginx_binary(), tmp_path / "nginx", [dead, nodes[0].port, nodes[1].port])
    try:
        for _ in range(6):
            answer = httpx.get(f"{proxy.url}/healthz", timeout=DEADLINE)
            assert answer.status_code == 200, answer.text
    finally:
        proxy.stop()
    assert f"127.0.0.1:{dead}" in proxy.errors(), "nginx never tried the dead node"
