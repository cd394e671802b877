"""``redis+cluster://`` without a cluster: where a channel's keys and live channel hash to.

(The conformance suite and tests/cluster/test_broker_failover.py run it on a real cluster.)
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from tidings.brokers import broker_for
from tidings.brokers.redis_cluster import ClusterBroker
from tidings.brokers.redis_scripts import APPEND, SHARDED_APPEND
from tidings.config import Settings

CHANNELS = ["news", "chat:lobby", "a", "user:42:inbox", "x" * 128]


@pytest.fixture
async def broker() -> ClusterBroker:
    made = broker_for("redis+cluster://127.0.0.1:1,127.0.0.1:2?prefix=app", Settings())
    assert isinstance(made, ClusterBroker)
    return made  # never started, and it connects to nothing until then


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_channel_s_keys_and_live_channel_share_one_slot(
    broker: ClusterBroker, channel: str
) -> None:
    names = [*broker.keys(channel), broker._live_name(channel)]
    assert len({key_slot(name.encode() if isinstance(name, str) else name) for name in names}) == 1
    assert key_slot(b"app:{" + channel.encode() + b"}:s") == key_slot(channel.encode())


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_live_name_gives_its_channel_back(broker: ClusterBroker, channel: str) -> None:
    assert broker._channel_of(broker._live_name(channel)) == channel
    assert broker._channel_of(b"app:ping:" + channel.encode()) is None


async def test_the_cluster_fans_out_with_sharded_pub_sub(broker: ClusterBroker) -> None:
    assert broker.APPEND_SCRIPT == SHARDED_APPEND
    assert "redis.call('SPUBLISH'" in SHARDED_APPEND
    assert "redis.call('PUBLISH'" in APPEND and "SPUBLISH" not in APPEND
