"""A node's Redis pub/sub connection is cut (CLIENT KILL) while its HTTP side lives: it
notices, subscribes again, and its SSE subscribers recover without loss."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.cluster.conftest import StartNodes
from tests.cluster.support import LeanSSE, offset, publish, wait_until, wait_until_async
from tests.redis.support import REDIS_URL

BEFORE = 10
DURING = 20
AFTER = 10


async def pubsub_clients(prefix: str) -> dict[str, int]:
    """name -> id of every ``<prefix>:<node>:pubsub`` connection Redis holds."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        listed = await client.client_list()
    finally:
        await client.aclose()
    return {
        str(entry["name"]): int(entry["id"])
        for entry in listed
        if str(entry.get("name", "")).startswith(f"{prefix}:")
        and str(entry["name"]).endswith(":pubsub")
    }


async def client_kill(client_id: int) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        assert await client.client_kill_filter(_id=str(client_id)) == 1
    finally:
        await client.aclose()


async def test_a_cut_pubsub_connection_is_rebuilt_without_loss(
    redis_url: str, start: StartNodes, http: httpx.AsyncClient
) -> None:
    prefix = redis_url.partition("?prefix=")[2]
    (b,) = await start(redis_url, 1)
    channel = "cut-" + uuid.uuid4().hex[:8]
    first = await publish(http, b, channel, 0)
    subscribers = [LeanSSE([b.url], channel, first) for _ in range(20)]
    for subscriber in subscribers:
        subscriber.start()
    try:
        await wait_until(lambda: all(s.connected for s in subscribers), "subscribers on B")
        found = await wait_until_async(lambda: pubsub_clients(prefix), "B's pubsub connection")
        assert len(found) == 1, found
        ((name, old_id),) = found.items()

        (a,) = await start(redis_url, 1)  # the publisher, with a pub/sub connection of its own
        ids = [await publish(http, a, channel, n) for n in range(BEFORE)]
        await wait_until(
            lambda: all(len(s.offsets) >= BEFORE for s in subscribers), "events before the cut"
        )

        await client_kill(old_id)
        # Published while B has no pub/sub connection: B must catch up from history.
        ids += [await publish(http, a, channel, n) for n in range(DURING)]
        renewed = await wait_until_async(
            lambda: _renewed(prefix, name, old_id), f"{name} to connect again", 30
        )
        assert renewed != old_id
        ids += [await publish(http, a, channel, n) for n in range(AFTER)]

        total = BEFORE + DURING + AFTER
        assert [offset(cursor) for cursor in ids] == list(range(2, total + 2))
        await wait_until(
            lambda: all(len(s.offsets) >= total for s in subscribers),
            "every event on every subscriber after the cut",
            30,
        )
        for subscriber in subscribers:
            assert subscriber.offsets == list(range(2, total + 2)), subscriber.errors[-3:]
            assert subscriber.resets == []
        assert b.alive and a.alive
    finally:
        await asyncio.gather(*(s.stop() for s in subscribers))


async def _renewed(prefix: str, name: str, old_id: int) -> int | None:
    now = (await pubsub_clients(prefix)).get(name)
    return now if now is not None and now != old_id else None
