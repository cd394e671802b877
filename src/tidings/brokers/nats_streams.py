"""Channel streams on JetStream: found or created, kept to their namespace's limits, cached.

Publishing uses the cached stream (one round trip per event); history asks NATS every time,
since it needs the stream's current first and last sequence anyway, and trusts only a
stream leader's answer (on a cluster, a stream between leaders is unavailable).
"""

from __future__ import annotations

import asyncio
import math

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RePublish,
    StorageType,
    StreamConfig,
    StreamInfo,
    StreamState,
)
from nats.js.errors import BadRequestError, NotFoundError

from tidings.brokers.nats_errors import translated
from tidings.brokers.nats_layout import ChannelStream, Layout, NatsOptions
from tidings.config import Settings
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.channel import namespace_of
from tidings.protocol.cursor import new_epoch

STREAM_NAME_IN_USE = 10058  # JetStream's error code: another node created the stream first
MAX_CACHED_STREAMS = 100_000

Opened = tuple[ChannelStream, StreamState]


class StreamDirectory:
    """This node's view of the channel streams under one prefix."""

    def __init__(self, layout: Layout, options: NatsOptions, settings: Settings) -> None:
        self._layout = layout
        self._options = options
        self._settings = settings
        self._known: dict[str, ChannelStream] = {}
        self._opening: dict[str, asyncio.Future[Opened]] = {}

    async def cached(self, js: JetStreamContext, channel: str) -> ChannelStream:
        """The stream as this node last saw it; concurrent first uses share one lookup."""
        known = self._known.get(channel)
        if known is not None:
            return known
        opening = self._opening.get(channel)
        if opening is None:
            opening = asyncio.ensure_future(self.open(js, channel))
            self._opening[channel] = opening
            opening.add_done_callback(lambda done: self._opened(channel, done))
        stream, _ = await asyncio.shield(opening)
        return stream

    def _opened(self, channel: str, done: asyncio.Future[Opened]) -> None:
        del self._opening[channel]
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter was cancelled

    def forget(self, channel: str) -> None:
        self._known.pop(channel, None)

    async def open(self, js: JetStreamContext, channel: str) -> Opened:
        """Look the channel's stream up (creating it), with its limits brought up to date."""
        namespace = self._settings.namespace(namespace_of(channel))
        name = self._layout.stream_name(channel)
        async with translated(f"open the stream of {channel!r}"):
            info = await self._info(js, name)
            if info is None:
                info = await self._create(js, self._layout.stream(channel, new_epoch(), namespace))
            epoch = self._layout.epoch_of(channel, info.config.subjects)
            if epoch is None:
                raise BrokerUnavailable(f"NATS stream {name} exists but is not a Tidings channel")
            stream = self._layout.stream(channel, epoch, namespace)
            if not self._configured(info.config, stream):
                info = await js.update_stream(self._config(stream))
        if info.cluster is not None and not info.cluster.leader:
            # A replicated stream between leaders (a failover) lets any of its servers answer
            # with what it holds, maybe one just restarted and behind: a stale head would turn
            # cursors into false resets. Only a leader's state is history.
            raise BrokerUnavailable(f"NATS stream {name} has no leader: electing one")
        if len(self._known) >= MAX_CACHED_STREAMS:
            self._known.clear()
        self._known[channel] = stream
        return stream, info.state

    @staticmethod
    async def _info(js: JetStreamContext, name: str) -> StreamInfo | None:
        try:
            return await js.stream_info(name)
        except NotFoundError:
            return None

    async def _create(self, js: JetStreamContext, stream: ChannelStream) -> StreamInfo:
        try:
            return await js.add_stream(self._config(stream))
        except BadRequestError as error:
            if error.err_code != STREAM_NAME_IN_USE:
                raise
        info = await self._info(js, stream.name)  # created by another node meanwhile
        if info is None:
            raise BrokerUnavailable(f"NATS stream {stream.name} vanished as it was created")
        return info

    def _config(self, stream: ChannelStream) -> StreamConfig:
        return StreamConfig(
            name=stream.name,
            description=f"tidings channel {stream.channel}",
            subjects=[stream.subject],
            max_msgs=max(stream.history_size, 1),  # JetStream reads 0 as "no limit"
            max_age=stream.ttl_seconds,
            duplicate_window=stream.ttl_seconds,
            discard=DiscardPolicy.OLD,
            storage=StorageType(self._options.storage),
            num_replicas=self._options.replicas,
            allow_direct=True,
            republish=RePublish(
                src=stream.subject, dest=self._layout.fanout_subject(stream.channel)
            ),
        )

    def _configured(self, config: StreamConfig, stream: ChannelStream) -> bool:
        wanted = self._config(stream)
        return (
            config.max_msgs == wanted.max_msgs
            and math.isclose(config.max_age or 0, stream.ttl_seconds, abs_tol=1e-3)
            and math.isclose(config.duplicate_window, stream.ttl_seconds, abs_tol=1e-3)
            and config.republish == wanted.republish
            and bool(config.allow_direct)
        )
