"""The hub's fan-out (hub/hub.py) on a memory broker, with plain objects as connections.

One connection with a bug must never cost the others their events: every subscriber, long
poll and heartbeat is isolated, and what raised is logged and counted by the supervisor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.hub.conftest import MakeHub
from tests.hub.support import Broken, Changes, Seen, Sharer, Woken
from tidings.hub.hub import FAN_OUT_SLICE, RESYNC_SLICE, RESYNC_STEP, Hub, Subscriber
from tidings.hub.tail import Tail
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Batch

pytestmark = pytest.mark.timeout(20)


async def subscribed(hub: Hub, channel: str, *subscribers: Subscriber) -> None:
    """Attach, and wait for the resync that follows the broker's subscription."""
    for subscriber in subscribers:
        hub.attach(channel, subscriber)
    probe = Seen()
    hub.attach(channel, probe)
    await probe.until(lambda: probe.resyncs == [channel], f"the subscription to {channel}")
    hub.detach(channel, probe)


async def polled(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition over many followers (no one of them tells when all are done)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_events_reach_every_subscriber_of_their_channel_only(hub: Hub) -> None:
    news, sport = Seen(), Seen()
    await subscribed(hub, "news", news)
    await subscribed(hub, "sport", sport)
    stored = [await hub.broker.publish("news", "m", b"%d" % n) for n in (1, 2)]
    await news.until(lambda: news.events == stored, "both events")
    assert sport.events == []
    assert hub.heads["news"] == stored[-1].cursor


async def test_events_that_arrive_together_are_one_batch(hub: Hub) -> None:
    seen = Seen()
    await subscribed(hub, "news", seen)
    stored = [await hub.broker.publish("news", "m", b"%d" % n) for n in range(5)]
    await seen.until(lambda: seen.events == stored, "the events")
    assert len(seen.batches) == 1  # published in one loop iteration, fanned out once


async def test_a_subscriber_that_raises_costs_no_one_else_their_events(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    broken, others, elsewhere = Broken(), [Seen() for _ in range(10)], Seen()
    await subscribed(hub, "news", broken, *others)
    await subscribed(hub, "sport", elsewhere)
    waiter = Woken(hub, "news")
    hub.supervisor.failures.clear()  # the subscription's resync met the broken one too
    news = await hub.broker.publish("news", "m", b"1")
    sport = await hub.broker.publish("sport", "m", b"1")  # fanned out after "news"
    await elsewhere.until(lambda: elsewhere.events == [sport], "the other channel's event")
    await waiter.until(lambda: len(waiter.woken) == 1, "the long poll")
    assert all(seen.events == [news] for seen in others)
    assert hub.supervisor.failures == {"Broken.deliver_batch": 1}
    logged = next(record.exc_info for record in caplog.records if record.exc_info)
    assert str(logged[1]) == "a broken connection"

    later = await hub.broker.publish("news", "m", b"2")  # the hub goes on with the next one
    await others[0].until(lambda: others[0].events == [news, later], "the next event")
    assert hub.supervisor.failures == {"Broken.deliver_batch": 2}


async def test_a_waiter_that_raises_does_not_keep_the_others_asleep(hub: Hub) -> None:
    await subscribed(hub, "news")
    broken = Broken()
    hub.wait("news", broken)
    waiters = [Woken(hub, "news") for _ in range(10)]
    await hub.broker.publish("news", "m", b"1")
    for waiter in waiters:
        await waiter.until(lambda w=waiter: len(w.woken) == 1, "every long poll")
    assert hub.supervisor.failures == {"Broken.wake": 1}


async def test_a_resync_reaches_every_follower_past_one_that_raises(hub: Hub) -> None:
    broken, others = Broken(), [Seen() for _ in range(10)]
    await subscribed(hub, "news", broken, *others)
    waiter = Woken(hub, "news")
    hub.supervisor.failures.clear()
    hub.resync("news")
    assert all(seen.resyncs == ["news", "news"] for seen in others)
    assert waiter.rechecks == 1
    assert hub.supervisor.failures == {"Broken.resync": 1}


async def test_heartbeats_go_on_past_a_connection_that_raises(make_hub: MakeHub) -> None:
    hub = make_hub({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "0.05"})
    beats: list[float] = []
    changes = Changes()

    class Beating:
        def heartbeat(self, now: float) -> None:
            beats.append(now)
            changes.changed()

    hub.beating.update({Broken(), Beating(), Broken()})
    await changes.until(lambda: len(beats) >= 3, "three heartbeats")
    assert hub.supervisor.failures["Broken.heartbeat"] >= 2 * 2


async def test_a_background_task_that_raises_is_logged_and_counted(hub: Hub) -> None:
    done = asyncio.Event()

    async def failing() -> None:
        done.set()
        raise RuntimeError("a broken task")

    hub.spawn(failing())
    await asyncio.wait_for(done.wait(), 5)
    for _ in range(10):  # its done callback runs in a later iteration of the loop
        if hub.supervisor.failures:
            break
        await asyncio.sleep(0)
    assert hub.supervisor.failures == {
        "test_a_background_task_that_raises_is_logged_and_counted.<locals>.failing": 1
    }


async def test_waiting_lists_the_held_long_polls_of_a_channel_or_of_all_once_each(
    hub: Hub,
) -> None:
    news, sport = Woken(hub, "news"), Woken(hub, "sport")
    hub.wait("sport", news)  # one poll on two channels
    assert hub.waiting("news") == {news}
    assert hub.waiting("sport") == {news, sport}
    assert hub.waiting() == {news, sport}
    assert hub.waiting("quiet") == set()
    hub.unwait("news", news)
    hub.unwait("sport", news)
    assert hub.waiting() == {sport}


async def test_a_resync_of_many_followers_is_paced_each_once_skipping_those_gone(
    hub: Hub,
) -> None:
    followers = [Seen() for _ in range(RESYNC_SLICE * 3)]
    await subscribed(hub, "news", *followers)
    await polled(lambda: all(seen.resyncs for seen in followers), "the subscription's resyncs")
    for seen in followers:
        seen.resyncs.clear()
    waiter = Woken(hub, "news")
    started = asyncio.get_running_loop().time()
    hub.resync("news")
    now = [seen for seen in followers if seen.resyncs]
    assert len(now) == RESYNC_SLICE  # the first slice at once, the rest later
    hub.resync("news")  # again: the first slice is queued anew, the others stay queued once
    later = [seen for seen in followers if not seen.resyncs]
    gone = later[:10]
    for seen in gone:
        hub.detach("news", seen)
    staying = later[10:]
    await polled(
        lambda: (
            all(len(seen.resyncs) == 2 for seen in now)
            and all(seen.resyncs for seen in staying)
            and waiter.rechecks == 1
        ),
        "every follower's resync",
    )
    assert asyncio.get_running_loop().time() - started >= 2 * RESYNC_STEP
    assert all(seen.resyncs == ["news", "news"] for seen in now)
    assert all(seen.resyncs == ["news"] for seen in staying)
    assert all(seen.resyncs == [] for seen in gone)


async def sharing(hub: Hub, channel: str, count: int) -> list[Sharer]:
    """``count`` sharers attached to ``channel`` at its head, the subscription live."""
    head = (await hub.broker.history(channel, None, 0)).cursor
    sharers = [Sharer(hub, (channel, head)) for _ in range(count)]
    await subscribed(hub, channel, *sharers)
    return sharers


async def published(hub: Hub, channel: str, *sharers: Sharer, count: int = 1) -> list[int]:
    """Publish ``count`` events in one loop iteration; wait until every sharer has them."""
    stored = [await hub.broker.publish(channel, "m", b"%d" % n) for n in range(count)]
    last = stored[-1].offset
    for sharer in sharers:
        written = sharer.offsets_written
        await sharer.until(lambda: last in written(), f"offset {last}")  # noqa: B023
    return [event.offset for event in stored]


async def test_streams_in_step_are_written_by_the_cohort_in_order(hub: Hub) -> None:
    sharers = await sharing(hub, "news", 3)
    offsets = await published(hub, "news", *sharers)  # written the general way, then join
    offsets += await published(hub, "news", *sharers, count=2)
    offsets += await published(hub, "news", *sharers)
    for sharer in sharers:
        assert sharer.offsets_written() == offsets
        assert sharer.batches == 1  # only the first batch went through write_batch
        assert sharer.tails["news"].offset == offsets[-1]
    assert hub.tally.deliveries["websocket"] == 3 * len(offsets)


async def test_a_fan_out_visits_followers_in_the_order_they_came(hub: Hub) -> None:
    """Streams, cohort members and long polls alike: the order their connections were made
    in, which their memory mostly follows (a set's order is its hash's, scattered)."""
    order: list[object] = []

    class InOrder(Sharer):
        def write_batch(self, tail: Tail, batch: Batch) -> None:
            order.append(self)
            super().write_batch(tail, batch)

        def write_shared(self, data: bytes) -> bool:
            order.append(self)
            return super().write_shared(data)

    class WokenInOrder(Woken):
        def wake(self, batch: Batch) -> None:
            order.append(self)
            super().wake(batch)

    head = (await hub.broker.history("news", None, 0)).cursor
    sharers = [InOrder(hub, ("news", head)) for _ in range(40)]
    await subscribed(hub, "news", *sharers)
    await published(hub, "news", *sharers)  # each written the general way, then joins
    assert order == sharers
    order.clear()
    await published(hub, "news", *sharers)  # the cohort writes them
    assert order == sharers
    order.clear()
    waiters = [WokenInOrder(hub, "news") for _ in range(40)]
    await hub.broker.publish("news", "m", b"1")
    await waiters[-1].until(lambda: len(waiters[-1].woken) == 1, "every long poll")
    assert order == [*sharers, *waiters]


async def test_a_member_that_lags_leaves_the_cohort_and_misses_nothing(hub: Hub) -> None:
    lagging, steady = await sharing(hub, "news", 2)
    offsets = await published(hub, "news", lagging, steady)
    lagging.tails["news"].backlog = []  # its transport filled up: live events wait
    held = await hub.broker.publish("news", "m", b"held")
    await steady.until(lambda: held.offset in steady.offsets_written(), "the next event")
    assert lagging.offsets_written() == offsets
    assert lagging.tails["news"].backlog == [held]
    lagging.catch_up(lagging.tails["news"])  # drained: history, then the backlog
    offsets += await published(hub, "news", lagging, steady)
    expected = [offsets[0], held.offset, *offsets[1:]]
    assert lagging.offsets_written() == steady.offsets_written() == expected


async def test_a_closing_or_detached_member_is_written_nothing_more(hub: Hub) -> None:
    closing, leaving, staying = await sharing(hub, "news", 3)
    offsets = await published(hub, "news", closing, leaving, staying)
    closing.open = False
    hub.detach("news", leaving)
    before = hub.tally.deliveries["websocket"]
    offsets += await published(hub, "news", staying)
    assert closing.offsets_written() == leaving.offsets_written() == offsets[:1]
    assert staying.offsets_written() == offsets
    assert hub.tally.deliveries["websocket"] == before + 1  # only the write that happened


async def test_a_batch_that_does_not_continue_the_cohort_goes_the_general_way(hub: Hub) -> None:
    sharers = await sharing(hub, "news", 2)
    offsets = await published(hub, "news", *sharers)
    second = await hub.broker.publish("news", "m", b"second")
    offsets += [second.offset, *await published(hub, "news", *sharers)]
    hub._deliver_batch(Batch("news", (second,)))  # a stale batch: it dissolves the cohort
    offsets += await published(hub, "news", *sharers)  # the general way, then they rejoin
    offsets += await published(hub, "news", *sharers)
    for sharer in sharers:
        assert sharer.offsets_written() == offsets
        assert sharer.batches == 2


class Slow(Sharer):
    """A sharer whose every write takes ``SLOW_WRITE`` seconds, as a starved process's do;
    each write and each heartbeat goes into one shared log, in order."""

    def __init__(self, hub: Hub, log: list[str], *tails: tuple[str, Cursor]) -> None:
        super().__init__(hub, *tails)
        self.log = log

    def _spend(self) -> None:
        until = time.perf_counter() + SLOW_WRITE
        while time.perf_counter() < until:
            pass
        self.log.append("write")

    def write_batch(self, tail: Tail, batch: Batch) -> None:
        self._spend()
        super().write_batch(tail, batch)

    def write_shared(self, data: bytes) -> bool:
        self._spend()
        return super().write_shared(data)


SLOW_WRITE = 0.0002


class SlowPoll(Woken):
    """A held long poll whose answer takes ``SLOW_WRITE`` seconds; logged as a write."""

    def __init__(self, hub: Hub, log: list[str], channel: str) -> None:
        super().__init__(hub, channel)
        self.log = log

    def wake(self, batch: Batch) -> None:
        until = time.perf_counter() + SLOW_WRITE
        while time.perf_counter() < until:
            pass
        self.log.append("write")
        super().wake(batch)


@pytest.mark.parametrize("path", ["general", "cohort", "long poll"])
async def test_heartbeats_due_during_a_long_fan_out_are_written_during_it(
    make_hub: MakeHub, path: str
) -> None:
    """Four slices of slow writes take about 0.4 s, eight steps of the timer: the heartbeats
    whose turn came meanwhile are written between slices, not after the last write."""
    hub = make_hub({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "0.05"})
    log: list[str] = []

    class Beating:
        def heartbeat(self, now: float) -> None:
            log.append("beat")

    hub.beating.add(Beating())
    count = 4 * FAN_OUT_SLICE
    if path == "long poll":
        await subscribed(hub, "news")
        polls = [SlowPoll(hub, log, "news") for _ in range(count)]
        await hub.broker.publish("news", "m", b"1")
        await polls[-1].until(lambda: all(poll.woken for poll in polls), "every poll answered")
    else:
        head = (await hub.broker.history("news", None, 0)).cursor
        slow = [Slow(hub, log, ("news", head)) for _ in range(count)]
        await subscribed(hub, "news", *slow)
        if path == "cohort":  # one batch the general way: then they are in step, a cohort
            await published(hub, "news", *slow)
        log.clear()
        await published(hub, "news", *slow)
    writes = [index for index, entry in enumerate(log) if entry == "write"]
    assert len(writes) == count
    during = [i for i, entry in enumerate(log) if entry == "beat" and writes[0] < i < writes[-1]]
    assert len(during) >= 3  # after each of the first three slices, at least
    # each between two slices: after a whole number of them
    assert all(log[:i].count("write") % FAN_OUT_SLICE == 0 for i in during)
