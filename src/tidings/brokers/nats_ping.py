"""A round trip through this node's own subscription in the fan-out subjects of ``nats://``.

JetStream answering says nothing about the node's fan-out: its core subscriptions to
``<prefix>.r.<token>`` may never have reached the server (a middlebox, an account that may
not subscribe there) while requests and publishes still work, and the node would deliver
nothing live and look healthy. So each node also subscribes to ``<prefix>.r.PING-<node>``
(upper case and ``-`` never occur in a channel's token), and the readiness check publishes
a ping there that must come back within the check's timeout.
"""

from __future__ import annotations

import asyncio
import math

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidings.brokers.nats_errors import translated
from tidings.brokers.patience import SLACK, Patience, retrieve
from tidings.exceptions import BrokerUnavailable


class FanoutPing:
    """Pings published to a subject only this node subscribes to, and awaited back."""

    __slots__ = ("_sequence", "_subscription", "_waiting", "subject")

    def __init__(self, prefix: str, node: str) -> None:
        self.subject = f"{prefix}.r.PING-{node}"
        self._sequence = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._subscription: Subscription | None = None

    async def listen(self, client: Client) -> None:
        """Subscribe (once per client: it replays the subscription after a reconnect)."""
        if self._subscription is not None:
            return
        async with translated("subscribe to its own pings"):
            self._subscription = await client.subscribe(self.subject, cb=self._pong)

    def forget(self) -> None:
        """The client is gone: a new one needs a new subscription."""
        self._subscription = None

    async def round_trip(self, client: Client, timeout: float) -> None:
        """Publish a ping and wait for it to come back through the subscription, for
        ``timeout`` seconds of the time this loop could run (see patience.py)."""
        await self.listen(client)
        self._sequence += 1
        sequence = self._sequence
        loop = asyncio.get_running_loop()
        back: asyncio.Future[None] = loop.create_future()
        self._waiting[sequence] = back
        patience = Patience(timeout)
        try:
            async with translated("send a ping through its subscription"):
                await client.publish(self.subject, b"%d" % sequence)
                # nats-py's own flush deadline is on the wall clock: the patience decides
                flushed = loop.create_task(client.flush(math.ceil(timeout * SLACK)))
                flushed.add_done_callback(retrieve)
                if not await patience.wait(flushed):
                    raise BrokerUnavailable("NATS did not answer a ping in time")
                flushed.result()
            if not await patience.wait(back):
                raise BrokerUnavailable(
                    "a ping did not come back through this node's NATS subscription"
                )
        finally:
            self._waiting.pop(sequence, None)

    async def _pong(self, message: Msg) -> None:
        if not message.data.isdigit():
            return
        sequence = int(message.data)
        for waiting, back in list(self._waiting.items()):
            if waiting <= sequence and not back.done():
                back.set_result(None)
