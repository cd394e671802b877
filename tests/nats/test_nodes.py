"""Several nodes (NatsBroker instances) on one NATS: fan-out, concurrent offsets, restarts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.brokers.conftest import Sink
from tests.nats.conftest import MakeNats
from tests.nats.support import NATS_URL, connect
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset

if TYPE_CHECKING:
    from tidings.brokers.nats import NatsBroker

pytestmark = pytest.mark.timeout(30)


def ignore(channel: str) -> None:
    """A resync callback for nodes that are not expected to need one."""


async def test_a_node_receives_only_the_channels_it_subscribed(make_nats: MakeNats) -> None:
    publisher, follower, control = make_nats(), make_nats(), make_nats()
    follower_sink, control_sink = Sink(), Sink()
    follower.start(follower_sink, ignore)
    control.start(control_sink, ignore)
    await follower.subscribe("wanted")
    for channel in ("wanted", "other"):
        await control.subscribe(channel)
    others = [await publisher.publish("other", "message", b"%d" % n) for n in range(3)]
    # The server hands a message to every matching subscription at once: once the control
    # node has them, the follower would have them too, before anything published later.
    await control_sink.wait_for(3)
    wanted = await publisher.publish("wanted", "message", b"1")
    assert await follower_sink.wait_for(1) == [wanted]
    await control_sink.wait_for(4)
    assert control_sink.events == [*others, wanted]

    await follower.unsubscribe("wanted")
    later = await publisher.publish("wanted", "message", b"2")
    await control_sink.wait_for(5)
    await follower.subscribe("other")
    last = await publisher.publish("other", "message", b"3")
    await follower_sink.wait_for(2)
    assert follower_sink.events == [wanted, last]
    assert later not in follower_sink.events


async def test_a_publisher_that_follows_the_channel_receives_its_own_events(
    make_nats: MakeNats,
) -> None:
    node, sink = make_nats(), Sink()
    node.start(sink, ignore)
    await node.subscribe("news")
    event = await node.publish("news", "message", b"1")
    assert await sink.wait_for(1) == [event]


async def test_a_new_subscription_asks_followers_to_check_history(make_nats: MakeNats) -> None:
    """Followers read history before the server had the subscription: a resync closes
    the window in which an event would reach neither their history page nor the link."""
    node, resyncs = make_nats(), list[str]()
    node.start(Sink(), resyncs.append)
    await node.subscribe("news")
    assert resyncs == ["news"]
    await node.subscribe("other")
    await node.subscribe("news")  # already listening: nothing to catch up
    assert resyncs == ["news", "other"]


async def test_concurrent_publishers_on_two_nodes_get_consecutive_offsets(
    make_nats: MakeNats,
) -> None:
    a, b, watcher, sink = make_nats(), make_nats(), make_nats(), Sink()
    watcher.start(sink, ignore)
    await watcher.subscribe("chat:busy")
    await a.publish("chat:busy", "message", b"0")  # both nodes then race on an open stream

    async def publish(name: str, node: NatsBroker, n: int) -> Event:
        return await node.publish("chat:busy", "message", f'"{name}{n}"'.encode())

    results = await asyncio.gather(
        *(publish(name, node, n) for n in range(40) for name, node in (("a", a), ("b", b)))
    )
    events = sorted(results, key=lambda event: event.offset)
    assert [event.offset for event in events] == list(range(2, 82))
    assert len({event.data for event in events}) == 80
    assert len({event.epoch for event in events}) == 1

    delivered = await sink.wait_for(81)
    assert [event.offset for event in delivered] == list(range(1, 82))
    assert delivered[1:] == events
    page = await b.history("chat:busy", Cursor(delivered[0].epoch, 0), 1000)
    assert list(page.events) == delivered


async def test_concurrent_first_publishes_on_two_nodes_create_one_stream(
    make_nats: MakeNats,
) -> None:
    a, b = make_nats(), make_nats()
    first = await asyncio.gather(*(node.publish("fresh", "message", b"1") for node in (a, b)))
    assert sorted(event.offset for event in first) == [1, 2]
    assert first[0].epoch == first[1].epoch


async def test_concurrent_retries_of_a_key_whose_event_left_history_store_once(
    make_nats: MakeNats,
) -> None:
    small = {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "2"}
    a, b = make_nats(small), make_nats(small)
    await a.publish("news", "message", b"1", idempotency_key="k")
    await a.publish("news", "message", b"2")
    await b.publish("news", "message", b"3")  # offset 1 leaves history
    retries = await asyncio.gather(
        *(node.publish("news", "message", b"again", idempotency_key="k") for node in (a, b) * 3)
    )
    assert {(event.offset, event.data) for event in retries} == {(4, b"again")}
    assert (await b.publish("news", "message", b"5")).offset == 5


async def test_history_and_idempotency_keys_survive_a_new_broker(
    make_nats: MakeNats, nats_url: str
) -> None:
    before = make_nats()
    events = [await before.publish("news", "message", b"%d" % n) for n in range(3)]
    keyed = await before.publish("news", "message", b"k", idempotency_key="msg-1")
    await before.close()

    after = make_nats()
    page = await after.history("news", Cursor(events[0].epoch, 0), 100)
    assert (list(page.events), page.reset) == ([*events, keyed], None)
    assert await after.publish("news", "message", b"retry", idempotency_key="msg-1") == keyed
    next_event = await after.publish("news", "message", b"4")
    assert (next_event.epoch, next_event.offset) == (events[0].epoch, 5)


async def test_a_deleted_stream_starts_a_new_epoch_and_old_cursors_reset(
    make_nats: MakeNats, nats_url: str
) -> None:
    from tidings.brokers.nats_layout import Layout

    node = make_nats()
    old = await node.publish("news", "message", b"1")
    prefix = nats_url.rpartition("prefix=")[2]
    client = await connect(NATS_URL)
    try:
        await client.jetstream().delete_stream(Layout(prefix).stream_name("news"))
    finally:
        await client.close()

    # This node still knows the old lifetime; its publish finds no stream and opens a new one.
    new = await node.publish("news", "message", b"2")
    assert (new.offset, new.data) == (1, b"2")
    assert new.epoch != old.epoch
    page = await node.history("news", old.cursor, 10)
    assert page.reset == Reset("news", new.cursor, "epoch")


async def test_a_message_read_through_the_stream_api_decodes_as_a_direct_get_does(
    make_nats: MakeNats, nats_url: str
) -> None:
    """On a cluster, history falls back from a direct get (any replica) to the leader's
    stream API; both reads give the same event."""
    from tidings.brokers.nats_layout import Layout, decode_event, with_position

    node = make_nats()
    stored = await node.publish("news", "typing", b'{"n":1}')
    prefix = nats_url.rpartition("prefix=")[2]
    client = await connect(NATS_URL)
    try:
        js = client.jetstream()
        name = Layout(prefix).stream_name("news")
        direct = await js.get_msg(name, stored.offset, direct=True)
        through_api = await js.get_msg(name, stored.offset)
    finally:
        await client.close()
    assert decode_event("news", direct.headers, direct.data) == stored
    headers = with_position(through_api.headers, through_api.subject or "", through_api.seq or 0)
    assert decode_event("news", headers, through_api.data) == stored
    assert decode_event("news", through_api.headers, through_api.data) is None
