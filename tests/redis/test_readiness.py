"""A node whose pub/sub link cannot come up is not ready, however long that lasts.

Plain commands work through the proxy and ``SUBSCRIBE`` is cut: publishes would be stored,
but this node would deliver nothing live. ``/readyz`` must answer 503 and
``tidings_broker_up`` read 0 the whole time, past the thousandth failed attempt, and both
turn green once subscriptions go through again.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import RunningServer
from tests.readiness import readiness, until_ready
from tests.redis.proxy import StallingProxy
from tests.redis.retries import counting_retries
from tests.redis.test_link import PAST_OVERFLOW

pytestmark = pytest.mark.timeout(120)


async def test_a_node_whose_pubsub_link_cannot_come_up_is_not_ready(
    make_server: Callable[..., RunningServer],
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = await StallingProxy(6379).start()
    proxy.kill_subscribes = True
    try:
        with counting_retries(monkeypatch) as retries:
            node = make_server(broker=f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix}")
            await retries.reach(3)
            assert await readiness(node) == (503, 0.0)
            await retries.reach(PAST_OVERFLOW)
            assert await readiness(node) == (503, 0.0)
            assert proxy.killed >= PAST_OVERFLOW

            proxy.kill_subscribes = False
            await until_ready(node)
    finally:
        await proxy.close()
