"""A fleet of real Python clients, a publisher that never stops, and what they saw.

Each member is one ``tidings`` client with one subscription on one technique, its open
recorded by a thin wrapper around the technique, so a test can tell when each client came
back after a drain. The publisher publishes through the front door (nginx) with idempotency
keys, sending a publish again (same key) when the proxy answers 502/503 or the connection
fails, and keeps the cursors acknowledged: the events every member must end with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from tests.serve_process import ServeProcess
from tidings import ClientEvent, Subscription
from tidings.client.backoff import Backoff
from tidings.client.client import Client
from tidings.client.events import Closed, Item, Unavailable
from tidings.client.ladder import Feed
from tidings.client.ladder import Publisher as SocketPublisher
from tidings.client.options import ClientOptions, Endpoint
from tidings.client.poll import PollTechnique
from tidings.client.sse import SSETechnique
from tidings.client.tokens import Tokens
from tidings.client.websocket import WebSocketTechnique
from tidings.server.drain import GRACE_SECONDS

OPENING_AT_ONCE = 50
PUBLISH_ATTEMPTS = 40


class TimedFeed:
    """A feed that notes when it ended and the delay the server asked for (or 1012 drew)."""

    def __init__(self, inner: Feed, technique: TimedTechnique) -> None:
        self._inner = inner
        self._technique = technique
        self._ended = False

    async def next(self) -> Item | Closed:
        item = await self._inner.next()
        if isinstance(item, Closed) and not self._ended:
            self._ended = True
            self._technique.ended.append((asyncio.get_running_loop().time(), item.server_delay))
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()


class TimedTechnique:
    """A technique that notes the loop time of every open that worked, and of every end."""

    def __init__(self, kind: str, http: httpx.AsyncClient, url: str, options: ClientOptions):
        tokens = Tokens(None, Backoff(), 0)
        endpoint = Endpoint(url, url.replace("http", "ws", 1) + "/ws", tokens)
        self.name = kind
        self.opened: list[float] = []
        self.ended: list[tuple[float, float | None]] = []  # (when, the delay asked for)
        if kind == "websocket":
            self._inner: WebSocketTechnique | SSETechnique | PollTechnique = WebSocketTechnique(
                endpoint, options
            )
        elif kind == "sse":
            self._inner = SSETechnique(http, endpoint, options)
        else:
            self._inner = PollTechnique(http, endpoint, options, long=True)

    async def open(self, channel: str, cursor: str | None, rewind: int = 0) -> Feed | Unavailable:
        opened = await self._inner.open(channel, cursor)
        if isinstance(opened, Unavailable):
            return opened
        self.opened.append(asyncio.get_running_loop().time())
        return TimedFeed(opened, self)

    def publisher(self) -> SocketPublisher | None:
        return None

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(eq=False)
class Member:
    kind: str
    client: Client
    http: httpx.AsyncClient
    technique: TimedTechnique
    subscription: Subscription | None = None
    ids: list[str] = field(default_factory=list)
    data: list[object] = field(default_factory=list)
    resets: int = 0
    awaited: str | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def reconnected_after(self, moment: float) -> list[float]:
        return [at - moment for at in self.technique.opened if at >= moment]

    def asked_after(self, moment: float) -> list[tuple[float, float | None]]:
        """(when the feed ended, the delay asked) for each end after ``moment``."""
        return [(at, asked) for at, asked in self.technique.ended if at >= moment]


class Fleet:
    """``count`` clients per technique on ``channel`` from ``since``, each read by a task."""

    def __init__(self, url: str, channel: str, since: str, window: float) -> None:
        self.url = url
        self.channel = channel
        self.since = since
        # The window the server drains in is the one a client draws its 1012 pause from.
        self.options = ClientOptions(
            restart_window=window, backoff=Backoff(initial=0.05, maximum=1.0), open_timeout=10
        )
        self.members: list[Member] = []
        self._readers: list[asyncio.Task[None]] = []

    async def open(self, kinds: dict[str, int]) -> None:
        gate = asyncio.Semaphore(OPENING_AT_ONCE)
        opening = [self._join(kind, gate) for kind, count in kinds.items() for _ in range(count)]
        await asyncio.gather(*opening)

    async def _join(self, kind: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            http = httpx.AsyncClient(verify=False, timeout=self.options.open_timeout)
            technique = TimedTechnique(kind, http, self.url, self.options)
            client = Client(self.url, options=self.options, techniques=[technique])
            member = Member(kind, client, http, technique)
            self.members.append(member)
            subscription = member.subscription = client.subscribe(self.channel, since=self.since)
            await subscription.open()
            self._readers.append(asyncio.create_task(self._read(member, subscription)))

    @staticmethod
    async def _read(member: Member, subscription: Subscription) -> None:
        async for item in subscription:
            if isinstance(item, ClientEvent):
                member.ids.append(item.id)
                member.data.append(item.data)
                if item.id == member.awaited:
                    member.reached.set()
            else:
                member.resets += 1

    async def reached(self, cursor: str, timeout: float) -> list[Member]:
        """Wait until every member has handed out ``cursor``; the members still short of it."""
        for member in self.members:
            member.awaited = cursor
            if cursor in member.ids:
                member.reached.set()
        waits = [asyncio.ensure_future(member.reached.wait()) for member in self.members]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for waiting in pending:
            waiting.cancel()
        return [member for member in self.members if not member.reached.is_set()]

    async def close(self) -> None:
        for member in self.members:
            await member.client.aclose()
            await member.http.aclose()
        await asyncio.gather(*self._readers, return_exceptions=True)


class Publisher:
    """Publishes ``0, 1, 2...`` every ``interval`` until ``until`` (loop time) is set and past."""

    def __init__(self, url: str, channel: str, interval: float) -> None:
        self.url = url
        self.channel = channel
        self.interval = interval
        self.acked: list[str] = []
        self.values: list[int] = []
        self.resent = 0
        self.until: float | None = None
        self.published = asyncio.Event()  # set after each acknowledged publish

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=5) as http:
            number = 0
            while self.until is None or loop.time() < self.until:
                await self._publish(http, number)
                number += 1
                await asyncio.sleep(self.interval)  # the publishing rate, not a wait for a state

    async def _publish(self, http: httpx.AsyncClient, number: int) -> None:
        body = {"channel": self.channel, "data": number, "idempotency_key": f"n{number}"}
        failures: list[str] = []
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                answer = await http.post(self.url + "/api/publish", json=body)
            except httpx.TransportError as error:
                failures.append(repr(error))
            else:
                if answer.status_code == 200:
                    self.acked.append(str(answer.json()["id"]))
                    self.values.append(number)
                    self.published.set()
                    return
                assert answer.status_code in (502, 503), answer.text
                failures.append(f"HTTP {answer.status_code}")
            self.resent += 1
            await asyncio.sleep(0.05 * (attempt + 1))  # the pause before sending it again
        raise AssertionError(f"publish {number} failed {PUBLISH_ATTEMPTS} times: {failures}")

    async def acked_at_least(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.acked) < count:
                self.published.clear()
                await self.published.wait()


def histogram(delays: list[float], window: float, buckets: int = 10) -> list[int]:
    """How many delays fall in each tenth of ``[0, window)``, then how many came later."""
    counts = [0] * (buckets + 1)
    for delay in delays:
        counts[min(buckets, max(0, int(delay / window * buckets)))] += 1
    return counts


def render_histogram(counts: list[int], window: float) -> str:
    width = window / (len(counts) - 1)
    top = max(counts) or 1
    lines = [
        f"{index * width:5.1f}-{(index + 1) * width:4.1f} s {count:5d} {'#' * (40 * count // top)}"
        for index, count in enumerate(counts[:-1])
    ]
    lines.append(f"    later   {counts[-1]:5d} {'#' * (40 * counts[-1] // top)}")
    return "\n".join(lines)


def terminate(node: ServeProcess, window: float) -> None:
    """SIGTERM by PID; wait for the exit the drain promises (window + grace, and slack)."""
    os.kill(node.process.pid, signal.SIGTERM)
    node.process.wait(timeout=window + GRACE_SECONDS + 5)


@contextlib.contextmanager
def stopped_at_exit(processes: list[ServeProcess]) -> Iterator[list[ServeProcess]]:
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
