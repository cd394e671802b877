"""A node dies (SIGKILL) under 1,000 SSE subscribers: they move to the other nodes, resume
with Last-Event-ID and end with exactly the published offsets."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.cluster.conftest import StartNodes
from tests.cluster.support import LeanSSE, offset, publish, wait_until

SUBSCRIBERS = 1000
BEFORE = 10
DURING = 20
AFTER = 10


async def test_subscribers_of_a_killed_node_resume_on_the_others(
    redis_url: str, start: StartNodes, http: httpx.AsyncClient
) -> None:
    a, b, c = await start(redis_url, 3)
    channels = [f"kill-{uuid.uuid4().hex[:8]}-{k}" for k in range(4)]
    since = {channel: await publish(http, b, channel, 0) for channel in channels}

    subscribers = [
        # Half go on to B, half to C once A is gone.
        LeanSSE(
            [a.url, b.url, c.url] if n % 2 else [a.url, c.url, b.url],
            channels[n % len(channels)],
            since[channels[n % len(channels)]],
        )
        for n in range(SUBSCRIBERS)
    ]
    for subscriber in subscribers:
        subscriber.start()
    try:
        await wait_until(
            lambda: all(s.connected for s in subscribers), "every subscriber on node A", 60, 0.05
        )
        assert all(s.connects == 1 for s in subscribers)

        published = {channel: [offset(since[channel])] for channel in channels}

        async def publish_round(node_url: str, rounds: int) -> None:
            for _ in range(rounds):
                for channel in channels:
                    answer = await http.post(
                        f"{node_url}/api/publish", json={"channel": channel, "data": 1}
                    )
                    assert answer.status_code == 200, answer.text
                    published[channel].append(offset(answer.json()["id"]))

        await publish_round(a.url, BEFORE)
        await wait_until(
            lambda: all(len(s.offsets) >= BEFORE for s in subscribers),
            "the first events on every subscriber",
            60,
            0.05,
        )

        a.kill()
        # Published to B and C while the subscribers are still finding their way back.
        await asyncio.gather(publish_round(b.url, DURING // 2), publish_round(c.url, DURING // 2))
        await publish_round(b.url, AFTER)

        total = BEFORE + DURING + AFTER
        await wait_until(
            lambda: all(len(s.offsets) >= total for s in subscribers),
            "every event on every subscriber after the kill",
            60,
            0.05,
        )
        for channel in channels:
            # B and C publish side by side: their answers may arrive in either order.
            assert sorted(published[channel]) == list(range(1, total + 2)), channel
        for subscriber in subscribers:
            assert subscriber.offsets == list(range(2, total + 2)), subscriber.errors[-3:]
            assert subscriber.resets == []
            assert subscriber.connects >= 2
        assert {s.url for s in subscribers} == {b.url, c.url}
        assert all(s.connected for s in subscribers)
    finally:
        await asyncio.gather(*(s.stop() for s in subscribers))
