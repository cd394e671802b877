"""``GET /metrics``: exact counter deltas per transport, the lag histogram, refusals, broker.

Every byte count is checked against what the clients themselves read off the socket, so a
counter that counts the wrong thing (or twice) fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer
from tests.server.support import (
    TIMEOUT,
    FrameReader,
    PublishStandIn,
    RawConnection,
    apublish,
    async_http_client,
    client_json,
    get,
    http_client,
    sse_stream,
    subscriber_count,
    wait_until,
    waiter_count,
    within,
    ws_handshake,
)
from tidings.exceptions import BrokerUnavailable

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SUBSCRIBERS = 3
EVENTS = 4
QUIET = {"heartbeat_seconds": 600}  # no ': ping' or ping frame among the counted bytes


def scrape(server: RunningServer, key: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with http_client(server) as http:
        response = http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def deliveries(transport: str) -> tuple[str, dict[str, str]]:
    return "tidings_deliveries_total", {"transport": transport}


def lag_count(samples: Samples) -> float:
    return value(samples, "tidings_delivery_lag_seconds_count")


async def publish_all(server: RunningServer, channel: str, count: int) -> None:
    async with async_http_client(server) as client:
        for n in range(count):
            await apublish(client, channel, {"n": n})


# --- deliveries and bytes, per transport ----------------------------------------------------


def frame_size(payload: bytes) -> int:
    length = len(payload)
    return 2 + (2 if 126 <= length < 65536 else 0) + (8 if length >= 65536 else 0) + length


async def ws_subscriber(server: RunningServer, channel: str) -> tuple[RawConnection, FrameReader]:
    connection = await RawConnection.open(server)
    await connection.send(ws_handshake())
    assert (await connection.head()).status == 101
    await connection.send(client_json({"op": "subscribe", "channel": channel, "ref": 1}))
    reader = FrameReader()
    frames: list[tuple[int, bytes]] = []
    while not frames:
        frames = reader.feed(await within(connection.reader.read(65536), "subscribed"))
    assert orjson.loads(frames[0][1])["op"] == "subscribed"
    return connection, reader


async def ws_event_bytes(connection: RawConnection, reader: FrameReader, count: int) -> int:
    """Read ``count`` event frames; return their size on the wire."""
    events: list[bytes] = []
    while len(events) < count:
        chunk = await within(connection.reader.read(65536), "event frames")
        events.extend(payload for _, payload in reader.feed(chunk))
    assert all(orjson.loads(payload)["op"] == "event" for payload in events)
    return sum(frame_size(payload) for payload in events)


async def test_websocket_deliveries_bytes_and_lag_are_exact(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(**QUIET)
    subscribers = [await ws_subscriber(server, "m-ws") for _ in range(SUBSCRIBERS)]
    before = scrape(server)
    assert value(before, "tidings_connections", transport="websocket") == SUBSCRIBERS
    assert value(before, "tidings_subscriptions") == SUBSCRIBERS
    await publish_all(server, "m-ws", EVENTS)
    written = 0
    for connection, reader in subscribers:
        written += await ws_event_bytes(connection, reader, EVENTS)
        await connection.close()
    after = scrape(server)
    name, labels = deliveries("websocket")
    assert delta(before, after, name, **labels) == EVENTS * SUBSCRIBERS
    assert delta(before, after, "tidings_written_bytes_total", transport="websocket") == written
    assert lag_count(after) - lag_count(before) == EVENTS * SUBSCRIBERS
    assert delta(before, after, "tidings_publishes_total") == EVENTS
    for other in ("sse", "long_poll", "poll"):
        assert delta(before, after, "tidings_deliveries_total", transport=other) == 0


async def test_sse_deliveries_and_bytes_match_what_the_streams_read(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(**QUIET)
    async with (
        async_http_client(server) as client,
        sse_stream(client, "/sse?channel=m-sse") as first,
        sse_stream(client, "/sse?channel=m-sse") as second,
        sse_stream(client, "/sse?channel=m-sse&envelope=1") as enveloped,
    ):
        streams = [first, second, enveloped]
        before = scrape(server)
        assert value(before, "tidings_connections", transport="sse") == SUBSCRIBERS
        await publish_all(server, "m-sse", EVENTS)
        for stream in streams:
            await stream.take(EVENTS)
        after = scrape(server)
    opening = [len(s.raw.partition(b"\n\n")[0]) + 2 for s in streams]
    written = sum(len(s.raw) for s in streams) - sum(opening)
    assert delta(before, after, "tidings_deliveries_total", transport="sse") == 3 * EVENTS
    assert delta(before, after, "tidings_written_bytes_total", transport="sse") == written
    assert lag_count(after) - lag_count(before) == 3 * EVENTS


async def test_each_heartbeat_written_counts_its_delay(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(heartbeat_seconds=0.2)
    before = scrape(server)
    async with (
        async_http_client(server) as client,
        sse_stream(client, "/sse?channel=m-beat") as stream,
    ):
        await stream.feed_until(lambda: stream.parser.comments >= 3, "three heartbeats")
        after = scrape(server)
    name = "tidings_heartbeat_delay_seconds"
    beats = delta(before, after, f"{name}_count")
    assert beats >= 3  # every heartbeat written is counted, each once
    assert beats == delta(before, after, f"{name}_bucket", le="+Inf")
    assert 0 <= delta(before, after, f"{name}_sum") / beats < 1.0


def counted(edge: str, raw: bytes, body: bytes) -> int:
    """The bytes of a poll answer the node counts as written: the whole answer, where the
    edge writes it (the standalone edge), else its body (an ASGI server writes the head)."""
    return len(raw) if edge == "standalone" else len(body)


async def read_response(connection: RawConnection) -> tuple[bytes, bytes]:
    """The next response's raw bytes (head and body) and its body."""
    head = await within(connection.reader.readuntil(b"\r\n\r\n"), "a response head")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await within(connection.reader.readexactly(length), "a response body")
    return head + body, body


async def test_long_poll_deliveries_count_every_shared_answer(
    make_server: Callable[..., RunningServer], edge: str
) -> None:
    server = make_server(**QUIET)
    connections = [await RawConnection.open(server) for _ in range(SUBSCRIBERS)]
    cursors = [None] * SUBSCRIBERS
    written = 0
    before = scrape(server)
    for n in range(EVENTS):
        for connection, cursor in zip(connections, cursors, strict=True):
            since = f"&since={cursor}" if cursor else ""
            await connection.send(get(f"/poll?channel=m-lp&timeout=10{since}"))
        await wait_until(lambda: waiter_count(server, "m-lp") == SUBSCRIBERS, "held long polls")
        if n == 0:
            held = scrape(server)
            assert value(held, "tidings_connections", transport="long_poll") == SUBSCRIBERS
        await publish_all(server, "m-lp", 1)
        for index, connection in enumerate(connections):
            raw, body = await read_response(connection)
            answer = orjson.loads(body)
            assert len(answer["events"]) == 1
            cursors[index] = answer["cursor"]
            written += counted(edge, raw, body)
    after = scrape(server)
    for connection in connections:
        await connection.close()
    assert delta(before, after, "tidings_deliveries_total", transport="long_poll") == (
        EVENTS * SUBSCRIBERS
    )
    assert delta(before, after, "tidings_written_bytes_total", transport="long_poll") == written
    # lag is observed on writes of the fan-out's shared bytes (docs/production.md): the
    # mount answers each poll on its own, through the ASGI server
    shared = EVENTS * SUBSCRIBERS if edge == "standalone" else 0
    assert lag_count(after) - lag_count(before) == shared


async def test_short_poll_answers_count_their_events_and_bytes(
    make_server: Callable[..., RunningServer], edge: str
) -> None:
    server = make_server()
    async with async_http_client(server) as client:
        start = (await client.get("/poll?channel=m-sp")).json()["cursor"]
        await publish_all(server, "m-sp", EVENTS)
        before = scrape(server)
        async with await RawConnection.open(server) as connection:
            await connection.send(get(f"/poll?channel=m-sp&since={start}"))
            raw, body = await read_response(connection)
            await connection.send(get(f"/poll?channel=m-sp&since={orjson.loads(body)['cursor']}"))
            await read_response(connection)  # nothing new: not a delivery
    after = scrape(server)
    assert len(orjson.loads(body)["events"]) == EVENTS
    assert delta(before, after, "tidings_deliveries_total", transport="poll") == EVENTS
    written = counted(edge, raw, body)
    assert delta(before, after, "tidings_written_bytes_total", transport="poll") == written
    assert lag_count(after) == lag_count(before)  # a poll answer is read, not fanned out


# --- resets, slow consumers, refusals, broker -------------------------------------------------


async def test_resets_and_slow_consumer_closes_are_exported(server: RunningServer) -> None:
    async with async_http_client(server) as client:
        answer = await client.get("/poll?channel=m-reset&since=nosuchepoch.5")
    assert answer.json()["resets"][0]["reason"] == "epoch"
    app = server.node
    assert app is not None
    server.call(lambda: setattr(app.stats, "slow_consumers", app.stats.slow_consumers + 2))
    samples = scrape(server)
    assert value(samples, "tidings_resets_total") == 1
    assert value(samples, "tidings_slow_consumer_closes_total") == 2


def test_metrics_and_the_admin_stream_need_the_api_key(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(api_keys=("right-key",))
    with http_client(server) as http:
        for path in ("/metrics", "/admin/stream"):
            missing = http.get(path)
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] == "unauthorized"
            wrong = http.get(path, headers={"Authorization": "Bearer wrong-key"})
            assert wrong.status_code == 401
            assert wrong.json()["error"]["code"] == "unauthorized"
    samples = scrape(server, "right-key")
    assert value(samples, "tidings_refusals_total", reason="unauthorized") == 4


def test_without_keys_only_loopback_may_read_metrics_or_watch(
    make_server: Callable[..., RunningServer],
) -> None:
    # A trusted local proxy forwards a client from elsewhere: the node must see a stranger.
    server = make_server(trusted_proxies="127.0.0.1")
    stranger = {"X-Forwarded-For": "192.0.2.7"}
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for path in ("/metrics", "/admin/stream"):
            answered = client.get(path, headers=stranger)
            assert answered.status_code == 403
            assert answered.json()["error"]["code"] == "forbidden"
    assert value(scrape(server), "tidings_refusals_total", reason="forbidden") == 2


async def test_broker_errors_are_counted_and_readyz_measures_the_round_trip(
    server: RunningServer,
) -> None:
    app = server.node
    assert app is not None

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("the broker is down (test)")

    original = app.broker
    server.call(lambda: setattr(app, "broker", PublishStandIn(original, unreachable)))
    async with async_http_client(server) as client:
        failed = await client.post("/api/publish", json={"channel": "m-b", "data": 1})
        assert failed.status_code == 503
        batch = await client.post("/api/publish", json={"events": [{"channel": "m-b", "data": 1}]})
        assert batch.json()["results"][0]["error"]["code"] == "unavailable"
        server.call(lambda: setattr(app, "broker", original))
        assert ("tidings_broker_rtt_seconds", ()) not in scrape(server)  # not measured yet
        assert (await client.get("/readyz")).status_code == 200
    samples = scrape(server)
    assert value(samples, "tidings_broker_errors_total") == 2
    assert value(samples, "tidings_broker_up") == 1
    assert 0 < value(samples, "tidings_broker_rtt_seconds") < TIMEOUT


async def test_each_server_in_a_process_keeps_its_own_numbers(
    make_server: Callable[..., RunningServer],
) -> None:
    first, second = make_server(), make_server()
    await publish_all(first, "m-own", 3)
    assert value(scrape(first), "tidings_publishes_total") == 3
    assert value(scrape(second), "tidings_publishes_total") == 0
    assert value(scrape(first), "process_cpu_seconds_total") > 0


async def test_metrics_of_a_dropped_subscriber_settle(server: RunningServer) -> None:
    """Open-connection gauges fall back when clients leave."""
    async with async_http_client(server) as client, sse_stream(client, "/sse?channel=m-gone"):
        assert value(scrape(server), "tidings_connections", transport="sse") == 1
    await wait_until(lambda: subscriber_count(server, "m-gone") == 0, "the stream to close")
    assert value(scrape(server), "tidings_connections", transport="sse") == 0


def test_metrics_refuse_other_methods(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        answer = http.post("/metrics")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, OPTIONS"


def test_unexpected_errors_and_pending_presence_are_exposed(server: RunningServer) -> None:
    node = server.node
    assert node is not None
    server.call(lambda: node.hub.supervisor.record("Test.job", RuntimeError("boom")))
    with http_client(server) as client:
        text = client.get("/metrics").text
    assert 'tidings_unexpected_errors_total{where="Test.job"} 1.0' in text
    assert "tidings_presence_pending 0.0" in text
