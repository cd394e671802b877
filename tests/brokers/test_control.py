"""The rewind and control parts of the broker conformance suite (brokers/base.py).

Every test runs against every URL in conftest.BROKER_URLS, as test_conformance.py does:
``recent`` (the last events history holds, for ``rewind``), control messages between nodes,
and revocations that outlive the node that stored them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.brokers.conftest import BROKER_URLS, LOCAL_BROKERS, Clock, MakeBroker, Sink
from tests.brokers.test_conformance import SHORT_TTL, SMALL_RING, offsets, publish_many
from tidings.brokers import Broker
from tidings.protocol.control import Control, Disconnect, Revocation, Unsubscribe

pytestmark = pytest.mark.timeout(30)
SHARED_BROKER_URLS = [url for url in BROKER_URLS if url.partition("://")[0] not in LOCAL_BROKERS]


# recent: what a rewind starts with


async def test_recent_gives_the_last_events_in_order_and_the_head(make_broker: MakeBroker) -> None:
    broker = make_broker()
    events = await publish_many(broker, "news", 5)
    head = events[-1].cursor
    page = await broker.recent("news", 3)
    assert (offsets(page.events), page.cursor, page.reset) == ([3, 4, 5], head, None)
    assert list(page.events) == events[2:]
    assert offsets((await broker.recent("news", 100)).events) == [1, 2, 3, 4, 5]
    nothing = await broker.recent("news", 0)
    assert (nothing.events, nothing.cursor) == ((), head)


async def test_recent_of_a_channel_without_events_is_its_head(make_broker: MakeBroker) -> None:
    broker = make_broker()
    page = await broker.recent("quiet", 10)
    assert page.events == ()
    assert page.cursor.offset == 0
    assert page.cursor == (await broker.history("quiet", None, 0)).cursor


async def test_recent_beyond_history_gives_what_it_holds_without_a_reset(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(SMALL_RING)
    events = await publish_many(broker, "news", 7)
    page = await broker.recent("news", 50)
    assert (offsets(page.events), page.cursor, page.reset) == ([5, 6, 7], events[-1].cursor, None)


async def test_recent_leaves_out_events_past_the_age_limit(
    make_broker: MakeBroker, clock: Clock
) -> None:
    broker = make_broker(SHORT_TTL)
    await publish_many(broker, "news", 2)
    await clock.advance(1.2)
    late = await publish_many(broker, "news", 1, start=3)
    page = await broker.recent("news", 10)
    assert (offsets(page.events), page.cursor) == ([3], late[0].cursor)
    await clock.advance(1.2)
    page = await broker.recent("news", 10)
    assert (page.events, page.cursor) == ((), late[0].cursor)


async def test_recent_nowait_answers_only_where_history_is_local(
    make_broker: MakeBroker, holds_history_locally: bool
) -> None:
    broker = make_broker()
    await publish_many(broker, "news", 2)
    page = broker.recent_nowait("news", 1)
    if holds_history_locally:
        assert page is not None
        assert offsets(page.events) == [2]
    else:
        assert page is None


# control messages between nodes


class Controls:
    """A control sink: what arrived, and waits with a deadline."""

    def __init__(self) -> None:
        self.seen: list[Control] = []
        self._changed = asyncio.Event()

    def __call__(self, message: Control) -> None:
        self.seen.append(message)
        self._changed.set()

    async def until(self, message: Control, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while message not in self.seen:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


async def started(broker: Broker) -> Controls:
    """Start ``broker`` with a control sink, and return once it listens (a round trip)."""
    controls = Controls()
    broker.start(Sink(), lambda channel: None, control=controls)
    await broker.check()
    return controls


async def test_a_control_message_reaches_the_sender_too(make_broker: MakeBroker) -> None:
    broker = make_broker()
    controls = await started(broker)
    revocation = Revocation("alice", 1_700_000_000.5, 1_700_086_400.5)
    sent: list[Control] = [
        Disconnect("node-a", "alice", reconnect=False, revocation=revocation),
        Disconnect("node-a", "bob", reconnect=True),
        Unsubscribe("node-a", "alice", "chat:lobby"),
    ]
    for message in sent:
        await broker.broadcast_control(message)
    for message in sent:
        await controls.until(message)
    assert controls.seen == sent  # one sender's messages, once each, in order


@pytest.mark.parametrize("broker_url", SHARED_BROKER_URLS, indirect=True)
async def test_a_control_message_reaches_every_node_once(make_broker: MakeBroker) -> None:
    first, second, third = make_broker(), make_broker(), make_broker()
    heard = [await started(first), await started(second), await started(third)]
    message = Unsubscribe("node-b", "user:7", "chat:x")
    await second.broadcast_control(message)
    for controls in heard:
        await controls.until(message)
    barrier = Disconnect("node-b", "barrier", reconnect=True)
    await second.broadcast_control(barrier)
    for controls in heard:
        await controls.until(barrier)
        assert controls.seen.count(message) == 1


# revocations


async def test_revocations_are_listed_until_they_are_over_and_replaced_by_later_ones(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()
    now = time.time()
    assert await broker.revocations() == []
    alice = Revocation("alice", now, now + 60)
    over = Revocation("bob", now - 120, now - 60)  # already over: never listed
    await broker.revoke(alice)
    await broker.revoke(over)
    assert await broker.revocations() == [alice]
    later = Revocation("alice", now + 5, now + 65)
    odd = Revocation("user:é/7 x", now, now + 60)  # any string is a sub
    await broker.revoke(later)
    await broker.revoke(odd)
    listed = sorted(await broker.revocations(), key=lambda revocation: revocation.sub)
    assert listed == [later, odd]


@pytest.mark.parametrize("broker_url", SHARED_BROKER_URLS, indirect=True)
async def test_a_revocation_outlives_the_node_that_stored_it(make_broker: MakeBroker) -> None:
    now = time.time()
    revocation = Revocation("carol", now, now + 60)
    storing = make_broker()
    await storing.revoke(revocation)
    await storing.close()
    assert await make_broker().revocations() == [revocation]


def test_a_revocation_refuses_tokens_issued_before_it_and_those_without_iat() -> None:
    revocation = Revocation("dave", before=1000.0, until=2000.0)
    assert revocation.refuses(999, now=1500.0)
    assert revocation.refuses(None, now=1500.0)
    assert not revocation.refuses(1000, now=1500.0)  # issued at the call: not before it
    assert not revocation.refuses(999, now=2000.0)  # over: every such token has expired
