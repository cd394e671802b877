"""The test's own redis-server stops for a few seconds mid-stream and comes back with its data:
no acknowledged event is missing anywhere, publishes in the outage are 503 + Retry-After, and
/readyz follows the broker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import tidings
from tests.client.support import FAST, collect
from tests.cluster.conftest import StartNodes
from tests.cluster.support import LeanSSE, offset, publish, wait_until, wait_until_async
from tests.redis.support import PrivateRedis, delete_keys, require_redis, unique_prefix

OUTAGE_SECONDS = 3.0


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    require_redis()
    server = PrivateRedis(tmp_path, appendonly=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ready_status(http: httpx.AsyncClient, url: str) -> int:
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get(f"{url}/readyz", timeout=3)).status_code
    return 0


async def ready_is(http: httpx.AsyncClient, url: str, expected: int) -> bool:
    return await ready_status(http, url) == expected


async def test_redis_restart_loses_no_acknowledged_event(
    private_redis: PrivateRedis, start: StartNodes, http: httpx.AsyncClient
) -> None:
    prefix = unique_prefix()
    a, b = await start(f"{private_redis.url}?prefix={prefix}", 2)
    channel = "outage-" + uuid.uuid4().hex[:8]
    first = await publish(http, a, channel, 0)

    acked: list[int] = [offset(first)]
    refused: list[httpx.Response] = []
    other: list[str] = []

    async def publish_one(n: int) -> None:
        try:
            answer = await http.post(
                f"{a.url}/api/publish", json={"channel": channel, "data": n}, timeout=5
            )
        except httpx.HTTPError as error:
            other.append(f"{type(error).__name__}: {error}")
            return
        if answer.status_code == 200:
            acked.append(offset(answer.json()["id"]))
        elif answer.status_code == 503:
            refused.append(answer)
        else:
            other.append(f"{answer.status_code} {answer.text}")

    lean = [LeanSSE([node.url], channel, first) for node in (a, b) for _ in range(5)]
    for subscriber in lean:
        subscriber.start()
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for node in (a, b):
            for transport in ("websocket", "sse", "long_poll", "poll"):
                client = await stack.enter_async_context(
                    tidings.connect(node.url, transport=transport, **FAST)
                )
                clients.append(
                    (
                        node.port,
                        transport,
                        await stack.enter_async_context(
                            collect(client.subscribe(channel, since=first))
                        ),
                    )
                )
        try:
            n = 1
            for _ in range(20):
                await publish_one(n)
                n += 1
            assert len(acked) == 21 and not refused and not other

            await private_redis.stop()
            stopped_at = time.monotonic()
            for node in (a, b):
                await wait_until_async(
                    functools.partial(ready_is, http, node.url, 503),
                    f"/readyz 503 on {node.url}",
                    15,
                )
            # Publishes during the outage: refused with 503 and Retry-After, bounded in count.
            for _ in range(200):
                if time.monotonic() - stopped_at > OUTAGE_SECONDS:
                    break
                await publish_one(n)
                n += 1
                await asyncio.sleep(0.05)
            assert refused, "no publish was refused during the outage"
            assert all(r.headers.get("retry-after") for r in refused)
            assert all(r.json().get("error") for r in refused)

            await private_redis.start()
            for node in (a, b):
                await wait_until_async(
                    functools.partial(ready_is, http, node.url, 200),
                    f"/readyz 200 on {node.url}",
                    30,
                )
            for _ in range(20):
                await publish_one(n)
                n += 1
            assert acked[-20:] == list(range(acked[-20], acked[-20] + 20))
            last = max(acked)

            await wait_until(
                lambda: all(s.offsets and s.offsets[-1] >= last for s in lean),
                "every lean subscriber to reach the last acknowledged event",
                30,
                0.05,
            )
            for subscriber in lean:
                assert subscriber.resets == []
                assert subscriber.offsets == list(range(2, last + 1)), subscriber.errors[-3:]
                assert set(acked[1:]) <= set(subscriber.offsets)
            for port, transport, seen in clients:
                await seen.wait_for(
                    lambda items: any(
                        getattr(item, "id", None) and offset(item.id) >= last for item in items
                    ),
                    f"offset {last}",
                    30,
                )
                offsets = [offset(event.id) for event in seen.events]
                assert offsets == list(range(2, last + 1)), (port, transport, offsets)
            # Publishes answered neither 200 nor 503 (a timeout) are allowed only as unknowns.
            assert len(other) <= 5, other
        finally:
            await asyncio.gather(*(s.stop() for s in lean))
            for node in (a, b):
                node.stop()
            if private_redis.process is not None:
                await delete_keys(private_redis.url, prefix)
