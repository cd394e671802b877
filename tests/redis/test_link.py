"""The pub/sub link's keeper (brokers/redis_link.py) through long outages.

An outage of Redis is a run of failures in a row; the keeper must outlive any number of
them, each followed by a capped, jittered pause, and bring the link back when Redis is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.redis.conftest import MakeRedis
from tests.redis.retries import counting_retries
from tests.redis.support import Recorder, eventually, free_port
from tidings.brokers import broker_for, redis_link
from tidings.brokers.redis_link import PubSubLink
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.supervisor import Supervisor

pytestmark = pytest.mark.timeout(90)

# 2 ** 1024 is the first power of two a float cannot hold.
PAST_OVERFLOW = 1100


async def test_the_link_outlives_a_thousand_failures_and_comes_back(
    private_redis: MakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = private_redis()  # its port is chosen, nothing listens there yet
    with counting_retries(monkeypatch) as retries:
        broker = broker_for(f"{redis.url}?prefix=link", Settings())
        recorder = Recorder()
        broker.start(recorder.sink, recorder.resync)
        try:
            await retries.reach(PAST_OVERFLOW)
            await redis.start()
            await eventually(broker.check, "the link after Redis came back")
            await broker.subscribe("news")
            published = await broker.publish("news", "m", b"1")
            assert await recorder.events_of("news", 1) == [published]
        finally:
            await broker.close()


class Stopped(BaseException):
    """What no supervisor catches (as a KeyboardInterrupt is not caught): the keeper ends."""


def lone_link(on_lost: Callable[[], Awaitable[None]]) -> PubSubLink:
    """A link of its own, with no Redis where it connects: every attempt fails at once."""
    port = free_port()

    def connect() -> AbstractConnection:
        return Connection(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))

    async def publish(name: bytes, body: bytes) -> None:
        raise AssertionError("a link that is never up publishes no ping")

    return PubSubLink(connect, publish, b"ping", ignore, ignore, on_lost)


def ignore(name: bytes) -> None:
    pass


async def test_an_unexpected_error_in_the_keeper_is_counted_and_the_keeper_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raised: list[int] = []

    async def lost_with_a_bug() -> None:
        if not raised:
            raised.append(1)
            raise RuntimeError("a bug in what runs when the link is lost")

    supervisor = Supervisor()
    with counting_retries(monkeypatch) as retries:
        link = lone_link(lost_with_a_bug)
        link.start(supervisor)
        try:
            await retries.reach(10)
        finally:
            await link.close()
    assert supervisor.failures == {redis_link.KEEPER: 1}


async def test_a_keeper_that_ends_all_the_same_leaves_the_link_down_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def stop() -> None:
        raise Stopped

    supervisor = Supervisor()
    with counting_retries(monkeypatch):
        link = lone_link(stop)
        link.start(supervisor)
        try:
            answers = []
            while "stopped" not in answers[-1:] and len(answers) < 100:
                with pytest.raises(BrokerUnavailable) as failed:  # red, before and after
                    await link.round_trip(0.05)
                answers.append(str(failed.value).rpartition(" ")[2])
            assert answers[-1] == "stopped"
            assert not link.up and not link.kept
        finally:
            await link.close()
    assert supervisor.failures == {redis_link.KEEPER: 1}
    assert any("keeper stopped" in record.getMessage() for record in caplog.records)
