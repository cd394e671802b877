"""Presence on ``redis://``: per channel, a sorted set of client ids by expiry and a hash of
their entries, changed only by the scripts below so that every change is announced once.

Keys, beside the channel's history keys (same hash slot): ``<prefix>:{<channel>}:pe`` (client
-> expiry in ms, Redis's own clock, so nodes' clocks do not matter) and ``<prefix>:{<channel>}:pc``
(client -> entry JSON). Changes are PUBLISHed on one pub/sub channel, ``<prefix>:presence``,
that every node's link subscribes to beside its events: presence never passes through the
event path. Both keys expire when no node has refreshed any entry for ``KEY_LIFETIME_FACTOR``
lifetimes, so a channel whose nodes all died leaves nothing behind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from tidings.protocol.presence import PresenceEntry, entry_from_json

KEY_LIFETIME_FACTOR = 4
SWEEP_AT_ONCE = 1000  # entries one sweep script removes, so that no script runs long
CHUNK = 500  # script calls in one pipeline, and clients in one call

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_LEAVE = """
local function leave(client)
  if redis.call('ZREM', KEYS[1], client) == 1 then
    local entry = redis.call('HGET', KEYS[2], client)
    redis.call('HDEL', KEYS[2], client)
    if entry then redis.call('PUBLISH', ARGV[1], '-' .. entry) end
  end
end
"""

# ARGV: fan-out channel, lifetime ms, key lifetime ms, then client and entry JSON pairs.
ADD = (
    _NOW
    + """
local expires = now + tonumber(ARGV[2])
for i = 4, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], expires, ARGV[i]) == 1 then
    redis.call('PUBLISH', ARGV[1], '+' .. ARGV[i + 1])
  end
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local keep = tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
return 0
"""
)

# ARGV: fan-out channel, then client ids.
REMOVE = (
    _LEAVE
    + """
for i = 2, #ARGV do leave(ARGV[i]) end
return 0
"""
)

# ARGV: fan-out channel, at most this many entries.
SWEEP = (
    _NOW
    + _LEAVE
    + """
local over = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, client in ipairs(over) do leave(client) end
return #over
"""
)

LIST = (
    _NOW
    + """
local clients = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local entries = {}
for start = 1, #clients, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(clients, start, math.min(start + 999, #clients)))
  for _, entry in ipairs(part) do
    if entry then table.insert(entries, entry) end
  end
end
return entries
"""
)


class RedisPresence:
    """The presence half of the Redis broker; its caller translates Redis errors."""

    def __init__(self, redis: Redis | RedisCluster, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.fanout = f"{prefix}:presence".encode()
        self._add = redis.register_script(ADD)
        self._remove = redis.register_script(REMOVE)
        self._sweep = redis.register_script(SWEEP)
        self._list = redis.register_script(LIST)

    def keys(self, channel: str) -> list[str]:
        base = f"{self._prefix}:{{{channel}}}:"
        return [base + "pe", base + "pc"]

    async def add(self, entries: Sequence[PresenceEntry], lifetime: float) -> None:
        lifetime_ms = max(1, round(lifetime * 1000))
        head: list[EncodableT] = [self.fanout, lifetime_ms, lifetime_ms * KEY_LIFETIME_FACTOR]
        calls = []
        for channel, group in _by_channel(entries).items():
            for start in range(0, len(group), CHUNK):
                args = list(head)
                for entry in group[start : start + CHUNK]:
                    args += [entry.client, entry.as_json()]
                calls.append((self.keys(channel), args))
        await self._run(self._add, calls)

    async def remove(self, entries: Sequence[PresenceEntry]) -> None:
        calls = []
        for channel, group in _by_channel(entries).items():
            for start in range(0, len(group), CHUNK):
                clients: list[EncodableT] = [e.client for e in group[start : start + CHUNK]]
                calls.append((self.keys(channel), [self.fanout, *clients]))
        await self._run(self._remove, calls)

    async def sweep(self, channels: Sequence[str]) -> None:
        head: list[EncodableT] = [self.fanout, SWEEP_AT_ONCE]
        calls = [(self.keys(channel), head) for channel in channels]
        await self._run(self._sweep, calls)

    async def entries(self, channel: str) -> list[PresenceEntry]:
        bodies = await self._list(keys=self.keys(channel), args=[])
        entries = []
        for body in bodies:
            try:
                entries.append(entry_from_json(body))
            except ValueError:
                continue  # not written by Tidings: it is nobody's presence
        return entries

    async def _run(
        self, script: AsyncScript, calls: list[tuple[list[str], list[EncodableT]]]
    ) -> None:
        for start in range(0, len(calls), CHUNK):
            try:
                await self._pipeline(script, calls[start : start + CHUNK])
            except NoScriptError:
                # A Redis Cluster pipeline does not load scripts (a one-server pipeline
                # does): load it on every primary, then run again, as every script here
                # can run twice with the same outcome.
                await self._redis.script_load(script.script)
                await self._pipeline(script, calls[start : start + CHUNK])

    async def _pipeline(
        self, script: AsyncScript, calls: list[tuple[list[str], list[EncodableT]]]
    ) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # AsyncScript handles a ClusterPipeline, though its signature omits it
                await script(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
            await pipe.execute()


def _by_channel(entries: Sequence[PresenceEntry]) -> dict[str, list[PresenceEntry]]:
    groups: dict[str, list[PresenceEntry]] = defaultdict(list)
    for entry in entries:
        groups[entry.channel].append(entry)
    return groups
