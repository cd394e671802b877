"""One node's presence (hub/presence.py) on a memory broker, without a socket.

The broker's calls run one at a time, in order; while the broker stalls, what waits for it
stays bounded by the node's own clients however much they come and go, and once the broker
answers again its entries are exactly the clients present.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from tests.hub.support import Changes, StallingBroker
from tidings.config import load_settings
from tidings.hub.presence import Presence
from tidings.protocol.identity import Identity
from tidings.protocol.presence import PresenceChange

pytestmark = pytest.mark.timeout(20)

CHANNELS = ("room", "hall")
CHURN = 1000  # clients that come and go while the broker stalls
STAYING = 10


class Node:
    """A Presence with the tasks it spawns, its broker, and the changes the broker announced."""

    def __init__(self) -> None:
        settings = load_settings(environ={"TIDINGS_NAMESPACES_DEFAULT_PRESENCE": "true"})
        self.broker = StallingBroker(settings)
        self.tasks: set[asyncio.Task[None]] = set()
        self.presence = Presence(self.broker, settings, self.spawn)
        self.changes: list[PresenceChange] = []
        self.announced = Changes()
        self.broker.start(lambda event: None, lambda channel: None, self.changed)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def changed(self, change: PresenceChange) -> None:
        self.changes.append(change)
        self.announced.changed()
        self.presence.changed(change)

    async def settled(self) -> None:
        """Every call queued so far has run."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)

    async def listed(self, channel: str) -> list[str | None]:
        return sorted(entry.sub for entry in await self.presence.clients(channel))


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    made = Node()
    yield made
    made.broker.flow()
    await made.presence.close()


class Watching:
    """A WebSocket told of joins and leaves: the frames it was sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def identity(name: str) -> Identity:
    return Identity(sub=name)


async def test_a_join_and_a_leave_reach_the_broker_and_the_watchers(node: Node) -> None:
    watcher, alice, bob = Watching(), object(), object()
    node.presence.join("room", alice, identity("alice"), watcher)
    node.presence.join("room", bob, identity("bob"), None)
    await node.settled()
    assert await node.listed("room") == ["alice", "bob"]
    node.presence.leave("room", bob)
    await node.settled()
    assert await node.listed("room") == ["alice"]
    assert [(c.op, c.entry.sub) for c in node.changes] == [
        ("join", "alice"),
        ("join", "bob"),
        ("leave", "bob"),
    ]
    assert len(watcher.frames) == 3 and b'"leave"' in watcher.frames[-1]


async def test_a_namespace_without_presence_is_left_alone() -> None:
    settings = load_settings()
    broker = StallingBroker(settings)
    presence = Presence(broker, settings, lambda coroutine: coroutine.close())
    presence.join("room", object(), identity("alice"), None)
    presence.tick()
    assert broker.calls == {"add": 0, "remove": 0, "sweep": 0}
    assert not presence.enabled("room")


async def test_a_quick_join_and_leave_leaves_no_ghost_behind(node: Node) -> None:
    for n in range(50):
        connection = object()
        node.presence.join("room", connection, identity(f"c{n}"), None)
        node.presence.leave("room", connection)
    await node.settled()
    assert await node.listed("room") == []


async def test_what_waits_for_a_stalled_broker_stays_bounded(node: Node) -> None:
    staying = [object() for _ in range(STAYING)]
    for n, connection in enumerate(staying):
        node.presence.join(CHANNELS[n % 2], connection, identity(f"stays-{n}"), None)
    await node.settled()

    node.broker.stall()
    node.presence.tick()  # one call is held; everything after it waits
    await node.broker.held.until(lambda: node.broker.waiting == 1, "the held call")
    calls_before = dict(node.broker.calls)
    for n in range(CHURN):
        connection = object()
        node.presence.join(CHANNELS[n % 2], connection, identity(f"passes-{n}"), None)
        if n % 10 == 0:
            node.presence.tick()
        node.presence.leave(CHANNELS[n % 2], connection)

    node.broker.flow()
    await node.settled()
    calls = {kind: node.broker.calls[kind] - calls_before[kind] for kind in calls_before}
    # the held call, then what waited: one call of each kind at most
    assert sum(calls.values()) <= 1 + 3, calls
    assert await node.listed("room") == [f"stays-{n}" for n in range(0, STAYING, 2)]
    assert await node.listed("hall") == [f"stays-{n}" for n in range(1, STAYING, 2)]


async def test_leaves_of_stored_entries_wait_in_bounded_room_too(node: Node) -> None:
    """Clients that were stored before the stall and leave during it each need a remove."""
    connections = [object() for _ in range(CHURN)]
    for n, connection in enumerate(connections):
        node.presence.join("room", connection, identity(f"c{n}"), None)
    await node.settled()
    node.broker.stall()
    node.presence.tick()
    await node.broker.held.until(lambda: node.broker.waiting == 1, "the held call")
    for connection in connections:
        node.presence.leave("room", connection)
        node.presence.tick()  # nobody is left: nothing to refresh
    assert node.presence.pending <= CHURN + len(CHANNELS)
    node.broker.flow()
    await node.settled()
    assert await node.listed("room") == []
    assert sum(1 for change in node.changes if change.op == "leave") == CHURN


async def test_close_takes_every_local_client_out(node: Node) -> None:
    for n in range(5):
        node.presence.join("room", object(), identity(f"c{n}"), None)
    await node.presence.close()
    assert await node.listed("room") == []
