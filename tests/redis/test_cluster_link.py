"""``redis+cluster://`` on a real cluster: a shard's lost link forgets the heads that
caught-up reads are answered from, as one server's lost link does (test_load.py), so a
resync after the link is back reads Redis rather than a head the link may have missed past.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.deployments import RedisCluster, with_prefix
from tests.redis.support import Recorder, kill_clients
from tidings.brokers import broker_for
from tidings.brokers.base import HistoryPage
from tidings.brokers.redis_cluster import ClusterBroker
from tidings.config import Settings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def nodes(redis_cluster: RedisCluster) -> AsyncIterator[tuple[ClusterBroker, ClusterBroker]]:
    url = with_prefix(redis_cluster.url)
    made = [broker_for(url, Settings()) for _ in range(2)]
    assert all(isinstance(node, ClusterBroker) for node in made)
    yield made[0], made[1]  # type: ignore[misc]
    for node in made:
        await node.close()


async def test_a_lost_shard_link_forgets_the_heads_until_the_resync(
    nodes: tuple[ClusterBroker, ClusterBroker], redis_cluster: RedisCluster
) -> None:
    node, publisher = nodes
    recorder = Recorder()
    node.start(recorder.sink, recorder.resync)
    await node.subscribe("news")
    await publisher.publish("news", "m", b"1")
    second = await publisher.publish("news", "m", b"2")
    await recorder.events_of("news", 2)
    assert node.history_nowait("news", second.cursor, 10) == HistoryPage((), second.cursor)

    resyncs = len(recorder.resyncs)
    name = node.client_name("pubsub")
    killed = [await kill_clients(f"redis://127.0.0.1:{port}", name) for port in redis_cluster.ports]
    assert sum(killed) == 3  # one link per shard
    await recorder.until(lambda: len(recorder.resyncs) > resyncs, "the links rebuilt")
    assert node.history_nowait("news", second.cursor, 10) is None  # forgotten with the link
    third = await publisher.publish("news", "m", b"3")
    await recorder.events_of("news", 3)
    assert node.history_nowait("news", third.cursor, 10) == HistoryPage((), third.cursor)
