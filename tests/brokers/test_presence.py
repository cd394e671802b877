"""The presence half of the broker conformance suite (brokers/base.py, docs/protocol.md 6 and 7).

Every test runs against every URL in conftest.BROKER_URLS, as test_conformance.py does.
To check that a change was announced exactly once, a test makes a later change (a "barrier"
entry) and waits for it: each broker announces one node's changes in the order it made them.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.brokers.conftest import BROKER_URLS, LOCAL_BROKERS, Clock, MakeBroker, Sink
from tidings.brokers import Broker
from tidings.protocol.presence import PresenceChange, PresenceEntry

pytestmark = pytest.mark.timeout(30)
SHARED_BROKER_URLS = [url for url in BROKER_URLS if url.partition("://")[0] not in LOCAL_BROKERS]

LIFETIME = 60.0
SHORT = 1.0


class Changes:
    """A presence sink: what was announced, and waits with a deadline."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # op, channel, client
        self._changed = asyncio.Event()

    def __call__(self, change: PresenceChange) -> None:
        self.seen.append((change.op, change.entry.channel, change.entry.client))
        self._changed.set()

    async def until(self, op: str, entry: PresenceEntry, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while (op, entry.channel, entry.client) not in self.seen:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def count(self, op: str, entry: PresenceEntry) -> int:
        return self.seen.count((op, entry.channel, entry.client))


def entry(channel: str = "chat:a", sub: str | None = None, info: object = None) -> PresenceEntry:
    return PresenceEntry(channel, "n" + uuid.uuid4().hex[:12], sub, info)


async def started(broker: Broker, sink: Sink) -> Changes:
    """Start ``broker`` with a presence sink, and return once it listens: ``check`` is a round
    trip through the link that carries the announcements, which misses those made before it
    is up (announcements are at most once)."""
    changes = Changes()
    broker.start(sink, lambda channel: None, changes)
    await broker.check()
    return changes


async def barrier(broker: Broker, changes: Changes, *channels: str) -> None:
    """Every change made before this on ``channels`` (``chat:a`` unless named) is announced
    once this returns: a marker joins each of them and is heard. Announcements are ordered
    within a channel only (on Redis Cluster each channel's go through its own shard)."""
    for channel in channels or ("chat:a",):
        marker = entry(channel)
        await broker.presence_add([marker], LIFETIME)
        await changes.until("join", marker)


def clients(entries: list[PresenceEntry]) -> set[tuple[str, str | None, object]]:
    return {(e.client, e.sub, repr(e.info)) for e in entries}


async def test_added_entries_are_listed_per_channel_and_joined_once(
    make_broker: MakeBroker, sink: Sink
) -> None:
    broker = make_broker()
    changes = await started(broker, sink)
    alice = entry(sub="alice", info={"name": "Alice", "tags": [1, None]})
    anonymous = entry()
    elsewhere = entry("chat:b", sub="bob")
    await broker.presence_add([alice, anonymous, elsewhere], LIFETIME)
    await broker.presence_add([alice], LIFETIME)  # a refresh: no second join

    assert clients(await broker.presence_list("chat:a")) == clients([alice, anonymous])
    assert clients(await broker.presence_list("chat:b")) == clients([elsewhere])
    assert await broker.presence_list("chat:nobody") == []
    listed = {e.client: e for e in await broker.presence_list("chat:a")}
    assert listed[alice.client].public() == {"sub": "alice", "info": alice.info}
    assert listed[anonymous.client].public() == {"sub": None, "info": None}

    await barrier(broker, changes, "chat:a", "chat:b")
    for added in (alice, anonymous, elsewhere):
        assert changes.count("join", added) == 1
    assert not [seen for seen in changes.seen if seen[0] == "leave"]


async def test_removed_entries_leave_once(make_broker: MakeBroker, sink: Sink) -> None:
    broker = make_broker()
    changes = await started(broker, sink)
    staying, going = entry(sub="stays"), entry(sub="goes")
    await broker.presence_add([staying, going], LIFETIME)
    await broker.presence_remove([going])
    await broker.presence_remove([going])  # already gone: nothing to announce
    await broker.presence_remove([entry()])  # never there

    assert clients(await broker.presence_list("chat:a")) == clients([staying])
    await barrier(broker, changes)
    assert changes.count("leave", going) == 1
    assert changes.count("leave", staying) == 0


async def test_an_entry_not_refreshed_expires_and_a_sweep_announces_its_leave(
    make_broker: MakeBroker, sink: Sink, clock: Clock
) -> None:
    broker = make_broker()
    changes = await started(broker, sink)
    fading, lasting = entry(sub="fading"), entry(sub="lasting")
    await broker.presence_add([fading], SHORT)
    await broker.presence_add([lasting], LIFETIME)
    await clock.advance(SHORT + 0.5)

    assert clients(await broker.presence_list("chat:a")) == clients([lasting])
    await broker.presence_sweep(["chat:a"])
    await broker.presence_sweep(["chat:a"])  # swept already: no second leave
    assert clients(await broker.presence_list("chat:a")) == clients([lasting])
    await barrier(broker, changes)
    assert changes.count("leave", fading) == 1
    assert changes.count("leave", lasting) == 0


async def test_a_refresh_keeps_an_entry_and_one_after_a_sweep_joins_again(
    make_broker: MakeBroker, sink: Sink, clock: Clock
) -> None:
    broker = make_broker()
    changes = await started(broker, sink)
    kept = entry(sub="kept")
    await broker.presence_add([kept], SHORT)
    await clock.advance(SHORT / 2)
    await broker.presence_add([kept], SHORT)  # refreshed before its time was over
    await clock.advance(SHORT / 2 + 0.2)
    assert clients(await broker.presence_list("chat:a")) == clients([kept])
    await broker.presence_sweep(["chat:a"])

    await clock.advance(SHORT + 0.5)
    await broker.presence_sweep(["chat:a"])
    await changes.until("leave", kept)
    await broker.presence_add([kept], LIFETIME)  # the node was only slow: it comes back
    assert clients(await broker.presence_list("chat:a")) == clients([kept])
    await barrier(broker, changes)
    assert changes.count("join", kept) == 2
    assert changes.count("leave", kept) == 1


# memory:// lives in one process: it has no other nodes to tell
@pytest.mark.parametrize("broker_url", SHARED_BROKER_URLS, indirect=True)
async def test_every_node_hears_every_change_and_concurrent_sweeps_leave_once(
    make_broker: MakeBroker, sink: Sink, clock: Clock
) -> None:
    first, second = make_broker(), make_broker()
    heard_first, heard_second = await started(first, sink), await started(second, Sink())
    joined = entry(sub="x")
    await first.presence_add([joined], SHORT)
    await heard_second.until("join", joined)
    assert clients(await second.presence_list("chat:a")) == clients([joined])

    await clock.advance(SHORT + 0.5)
    await asyncio.gather(first.presence_sweep(["chat:a"]), second.presence_sweep(["chat:a"]))
    await barrier(first, heard_first)
    await barrier(second, heard_second)
    assert heard_first.count("leave", joined) == 1
    assert heard_second.count("leave", joined) == 1
