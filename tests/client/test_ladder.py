"""The ladder and the subscription's reconnect loop, with fake techniques: no network."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tidings import Backoff, ClientError, ClientEvent, ResetEvent, ServerRejected, connect
from tidings.client import Feed, Ladder, Publisher
from tidings.client.events import Closed, Item, Position, Unavailable

NO_JITTER = Backoff(random=lambda: 0.0)


def event(cursor: str, channel: str = "news") -> ClientEvent:
    return ClientEvent(channel, cursor, "message", {"at": cursor}, 1)


@dataclass
class FakeFeed:
    """Hands out ``items``; then blocks until closed, unless the last item is a Closed."""

    items: list[Item | Closed | Exception]
    closed: bool = False
    _gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self) -> Item | Closed:
        if self.items:
            item = self.items.pop(0)
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Closed):
                self.items.insert(0, item)  # a closed feed stays closed
            return item
        await self._gone.wait()
        return Closed("closed")

    async def aclose(self) -> None:
        self.closed = True
        self._gone.set()


Outcome = FakeFeed | Unavailable | ServerRejected


class FakeTechnique:
    """Answers each ``open`` with the next outcome (the last one repeats); records cursors."""

    def __init__(self, name: str, *outcomes: Outcome) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.cursors: list[str | None] = []
        self.closed = False

    async def open(self, channel: str, cursor: str | None, rewind: int = 0) -> Feed | Unavailable:
        self.cursors.append(cursor)
        await asyncio.sleep(0)  # an open takes a turn of the loop, like a real one
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, ServerRejected):
            raise outcome
        return outcome

    def publisher(self) -> Publisher | None:
        return None

    async def aclose(self) -> None:
        self.closed = True


def down(reason: str = "refused", delay: float | None = None) -> Unavailable:
    return Unavailable(reason, delay)


# The ladder


async def test_it_walks_down_in_order_and_remembers_what_worked() -> None:
    feed = FakeFeed([])
    ws, sse, long_poll, poll = (
        FakeTechnique("websocket", down("upgrade refused")),
        FakeTechnique("sse", down("buffered")),
        FakeTechnique("long_poll", feed),
        FakeTechnique("poll", FakeFeed([])),
    )
    ladder = Ladder([ws, sse, long_poll, poll])
    assert await ladder.open("news", None) == (long_poll, feed)
    assert ladder.chosen is long_poll
    await ladder.open("other", "e.4")
    assert (ws.cursors, sse.cursors, long_poll.cursors, poll.cursors) == (
        [None],
        [None],
        [None, "e.4"],
        [],
    )


async def test_a_final_refusal_is_raised_without_moving_down() -> None:
    ws = FakeTechnique("websocket", ServerRejected(400, "invalid_channel", "no"))
    sse = FakeTechnique("sse", FakeFeed([]))
    with pytest.raises(ServerRejected):
        await Ladder([ws, sse]).open("bad channel", None)
    assert sse.cursors == []


async def test_when_nothing_opens_the_next_attempt_starts_again_at_the_top() -> None:
    ws = FakeTechnique("websocket", down("refused", 3.0))
    sse = FakeTechnique("sse", down("HTTP 502", 1.0))
    ladder = Ladder([ws, sse])
    failed = await ladder.open("news", None)
    assert failed == Unavailable("websocket: refused; sse: HTTP 502", 1.0)
    assert ladder.chosen is None
    await ladder.open("news", None)
    assert (len(ws.cursors), len(sse.cursors)) == (2, 2)


async def test_a_remembered_technique_is_retried_not_abandoned() -> None:
    ws = FakeTechnique("websocket", FakeFeed([]), down("connection refused"))
    sse = FakeTechnique("sse", FakeFeed([]))
    ladder = Ladder([ws, sse])
    await ladder.open("news", None)
    assert await ladder.open("news", "e.1") == down("connection refused")
    assert sse.cursors == []


async def test_subscriptions_started_together_walk_the_ladder_once() -> None:
    ws = FakeTechnique("websocket", down())
    sse = FakeTechnique("sse", FakeFeed([]), FakeFeed([]))
    ladder = Ladder([ws, sse])
    first, second = await asyncio.gather(ladder.open("a", None), ladder.open("b", None))
    assert not isinstance(first, Unavailable) and not isinstance(second, Unavailable)
    assert (len(ws.cursors), len(sse.cursors)) == (1, 2)


async def test_a_ladder_needs_a_rung() -> None:
    with pytest.raises(ClientError):
        Ladder([])


# The subscription over fake techniques


async def test_duplicates_are_dropped_and_every_reconnect_resumes_from_the_cursor() -> None:
    first = FakeFeed([Position("e.0"), event("e.1"), event("e.2"), event("e.2"), Closed("cut")])
    second = FakeFeed([Position("e.2"), event("e.1"), event("e.2"), event("e.3")])
    technique = FakeTechnique("websocket", first, second)
    async with connect(techniques=[technique], backoff=NO_JITTER) as client:
        subscription = client.subscribe("news")
        got = [await anext(subscription) for _ in range(3)]
        assert [item.id for item in got] == ["e.1", "e.2", "e.3"]
        assert technique.cursors == [None, "e.2"]
        assert first.closed
        assert (subscription.connections, subscription.reconnects) == (2, 1)
        assert subscription.last_failure == "cut"
        assert client.transport == subscription.transport == "websocket"


async def test_a_reset_is_handed_out_and_the_subscription_continues_from_it() -> None:
    first = FakeFeed([event("e.1"), ResetEvent("news", "e.9", "gap"), event("e.10"), Closed("x")])
    technique = FakeTechnique("sse", first, FakeFeed([event("e.11")]))
    async with connect(techniques=[technique], backoff=NO_JITTER) as client:
        subscription = client.subscribe("news", since="e.0")
        got = [await anext(subscription) for _ in range(3)]
        assert got[1] == ResetEvent("news", "e.9", "gap")
        assert subscription.cursor == "e.10"
        assert (await anext(subscription)).id == "e.11"  # after the Closed, from the cursor
        assert technique.cursors == ["e.0", "e.10"]


async def test_a_new_epoch_is_not_judged_by_its_offset() -> None:
    """Only offsets of one epoch compare; a cursor of another epoch is never a duplicate."""
    feed = FakeFeed([event("old.7"), ResetEvent("news", "new.0", "epoch"), event("new.1")])
    async with connect(techniques=[FakeTechnique("sse", feed)]) as client:
        subscription = client.subscribe("news")
        got = [await anext(subscription) for _ in range(3)]
    assert [item.id for item in got] == ["old.7", "new.0", "new.1"]


async def test_a_position_moves_the_cursor_forward_only() -> None:
    feed = FakeFeed([Position("e.5"), Position("e.3"), event("e.4"), event("e.6")])
    async with connect(techniques=[FakeTechnique("poll", feed)]) as client:
        subscription = client.subscribe("news")
        assert (await anext(subscription)).id == "e.6"  # e.4 is behind the position
        assert subscription.cursor == "e.6"


async def test_items_of_another_channel_are_not_handed_out() -> None:
    feed = FakeFeed([event("e.1", channel="sport"), event("e.1")])
    async with connect(techniques=[FakeTechnique("sse", feed)]) as client:
        assert (await anext(client.subscribe("news"))).channel == "news"


async def test_failures_wait_at_least_the_server_delay() -> None:
    technique = FakeTechnique("sse", down("503", 0.05), down("503", 0.05), FakeFeed([event("e.1")]))
    loop = asyncio.get_running_loop()
    async with connect(techniques=[technique], backoff=NO_JITTER) as client:
        started = loop.time()
        await anext(client.subscribe("news"))
        assert loop.time() - started >= 0.1
    assert len(technique.cursors) == 3


async def test_it_gives_up_after_max_retries_failed_retries_in_a_row() -> None:
    technique = FakeTechnique("websocket", down("connection refused"))
    async with connect(techniques=[technique], backoff=NO_JITTER, max_retries=2) as client:
        subscription = client.subscribe("news")
        with pytest.raises(ClientError, match="connection refused"):
            await anext(subscription)
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)
    assert len(technique.cursors) == 3


async def test_a_final_refusal_from_an_open_feed_ends_the_subscription() -> None:
    feed = FakeFeed([event("e.1"), ServerRejected(401, "unauthorized", "token expired")])
    async with connect(techniques=[FakeTechnique("poll", feed)]) as client:
        subscription = client.subscribe("news")
        await anext(subscription)
        with pytest.raises(ServerRejected):
            await anext(subscription)
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)
        assert feed.closed


async def test_aclose_from_another_task_ends_the_iteration_quietly() -> None:
    feed = FakeFeed([event("e.1")])
    async with connect(techniques=[FakeTechnique("sse", feed)]) as client:
        subscription = client.subscribe("news")
        got: list[object] = []
        first = asyncio.Event()

        async def read() -> None:
            async for item in subscription:
                got.append(item)
                first.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(first.wait(), 5)
        await subscription.aclose()
        await asyncio.wait_for(reader, 5)  # StopAsyncIteration, not CancelledError
    assert len(got) == 1 and feed.closed


async def test_someone_elses_cancellation_is_not_swallowed() -> None:
    async with connect(techniques=[FakeTechnique("sse", FakeFeed([]))]) as client:
        subscription = client.subscribe("news")
        await subscription.open()
        reader = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0)  # let it block on the feed
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


async def test_closing_the_client_closes_its_techniques_and_refuses_more_work() -> None:
    technique = FakeTechnique("sse", FakeFeed([]))
    client = connect(techniques=[technique])
    async with client:
        await client.subscribe("news").open()
    assert technique.closed
    with pytest.raises(ClientError):
        client.subscribe("news")
    with pytest.raises(ClientError):
        await client.publish("news", 1)


def test_an_unknown_transport_or_url_is_refused() -> None:
    with pytest.raises(ClientError, match="transport"):
        connect("http://127.0.0.1:1", transport="carrier-pigeon")
    with pytest.raises(ClientError, match="URL"):
        connect("ws://127.0.0.1:1")
