"""The hub's fan-out (hub/hub.py) on a memory broker, with plain objects as connections.

One connection with a bug must never cost the others their events: every subscriber, long
poll and heartbeat is isolated, and what raised is logged and counted by the supervisor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.hub.conftest import MakeHub
from tests.hub.support import Broken, Changes, Seen, Woken
from tidings.hub.hub import RESYNC_SLICE, RESYNC_STEP, Hub

pytestmark = pytest.mark.timeout(20)


async def subscribed(hub: Hub, channel: str, *subscribers: Seen | Broken) -> None:
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
