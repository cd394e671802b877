"""The revocation bucket of ``nats://`` (brokers/nats_control.py): its age limit is the
longest a revocation lasts, and a bucket found with a shorter one (``auth.max_token_seconds``
grew) has it raised, so that no revocation ages out before its tokens have expired."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.nats.support import NATS_URL, connect, isolated_nats_url
from tidings.brokers import broker_for
from tidings.config import load_settings
from tidings.protocol.control import Revocation

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with isolated_nats_url(NATS_URL) as isolated:
        yield isolated


async def bucket_age(url: str) -> float | None:
    prefix = url.partition("prefix=")[2]
    client = await connect(NATS_URL)
    try:
        info = await client.jetstream().stream_info(f"KV_{prefix}_revoked")
        return info.config.max_age
    finally:
        await client.close()


async def test_the_bucket_keeps_revocations_as_long_as_tokens_may_live(url: str) -> None:
    now = time.time()
    revocation = Revocation("u", now, now + 60)
    short = broker_for(url, load_settings(environ={"TIDINGS_AUTH_MAX_TOKEN_SECONDS": "60"}))
    try:
        await short.revoke(revocation)
    finally:
        await short.close()
    assert await bucket_age(url) == 60

    longer = broker_for(url, load_settings(environ={"TIDINGS_AUTH_MAX_TOKEN_SECONDS": "3600"}))
    try:
        assert await longer.revocations() == [revocation]
    finally:
        await longer.close()
    assert await bucket_age(url) == 3600
