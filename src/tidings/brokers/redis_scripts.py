"""The Lua of the ``redis://`` broker: a channel's offset, epoch and history move together.

Each channel owns three keys that share one hash slot (``{channel}`` is a hash tag; channel
names cannot contain braces):

- ``<prefix>:{<channel>}:m``, the meta hash: ``epoch`` and ``offset`` (the last one given);
- ``<prefix>:{<channel>}:s``, the stream: one entry per held event, with the id
  ``<offset>-0`` and the fields ``e`` (event name), ``d`` (data), ``t`` (server time, Unix
  ms) and, for an idempotent publish, ``k`` (its key);
- ``<prefix>:{<channel>}:k``, the idempotency hash: key -> offset, only for held entries.

Both scripts run atomically: they create the meta (with the candidate epoch the caller
passes) when it is missing, drop entries older than the age limit, and refresh the keys'
expiry. ``APPEND`` then gives the next offset, stores the entry, trims to the size limit and
PUBLISHes the stored event (SPUBLISH on Redis Cluster), so nodes receive a channel's events
in offset order and an event is never fanned out unless stored. A missing meta starts a new
epoch on a clean stream: when Redis loses a channel (expiry, restart without persistence),
resuming clients get an ``epoch`` reset. Reads write too (create the meta, trim, refresh
expiry), so they run on the primary.

The functions at the end turn the scripts' answers (and the fan-out messages) into Events
and HistoryPages; ``page_of`` decides between events, an ``epoch`` and a ``gap`` reset.
"""

from __future__ import annotations

from typing import Any

from tidings.brokers.base import HistoryPage, page_after
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset

_COMMON = """
local stream, meta, keys = KEYS[1], KEYS[2], KEYS[3]
local ttl_ms = tonumber(ARGV[2])

local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

local function epoch_of(candidate)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then return epoch end
  redis.call('DEL', stream, keys)
  redis.call('HSET', meta, 'epoch', candidate, 'offset', 0)
  return candidate
end

local function forget_keys(entries)
  for _, entry in ipairs(entries) do
    local key = entry[2][8]
    if key then redis.call('HDEL', keys, key) end
  end
end

local function expire_old(now)
  if ttl_ms == 0 then return end
  local oldest_allowed = tonumber(now) - ttl_ms
  -- most calls find nothing old: look at the oldest entry alone before reading a batch
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest == 0 or tonumber(oldest[1][2][6]) >= oldest_allowed then return end
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 100)
    local gone, ids = {}, {}
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][6]) >= oldest_allowed then break end
      gone[#gone + 1] = entry
      ids[#ids + 1] = entry[1]
    end
    if #ids == 0 then return end
    forget_keys(gone)
    redis.call('XDEL', stream, unpack(ids))
    if #ids < #batch or #batch < 100 then return end
  end
end

local function keep(key, ms)
  if ttl_ms == 0 then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ms) end
end
"""

READ = (
    _COMMON
    + """
-- ARGV: candidate epoch, ttl ms, meta ttl ms, since epoch, first offset wanted, limit,
--       bytes of data a page stops after (one entry at least)
local epoch = epoch_of(ARGV[1])
expire_old(now_ms())
keep(meta, ARGV[3])
local last = redis.call('HGET', meta, 'offset')
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
local first, entries = '', {}
if #head > 0 then
  first = head[1][1]
  if ARGV[4] == epoch then
    local from, wanted, budget = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
    local bytes = 0
    while #entries < wanted and bytes < budget do
      local count = math.min(wanted - #entries, 64)
      local chunk = redis.call('XRANGE', stream, from, '+', 'COUNT', count)
      if #chunk == 0 then break end
      for _, entry in ipairs(chunk) do
        bytes = bytes + #entry[2][4]
        if #entries > 0 and bytes > budget then break end
        entries[#entries + 1] = entry
      end
      from = string.format('%d', tonumber(string.match(entries[#entries][1], '^%d+')) + 1)
    end
  end
end
return {epoch, last, first, entries}
"""
)

RECENT = (
    _COMMON
    + """
-- ARGV: candidate epoch, ttl ms, meta ttl ms, count
local epoch = epoch_of(ARGV[1])
expire_old(now_ms())
keep(meta, ARGV[3])
local last = redis.call('HGET', meta, 'offset')
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', ARGV[4])
end
return {epoch, last, entries}
"""
)

# Revocations: one hash, sub -> "<before> <until>" (seconds), whose key lives as long as its
# longest revocation. KEYS: the hash. ARGV: sub, value, now (seconds), ms to keep it.
REVOKE = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ends = tonumber(string.match(all[i + 1], ' (.*)$'))
  if ends == nil or ends <= tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 0
"""

_APPEND = (
    _COMMON
    + """
-- ARGV: candidate epoch, ttl ms, meta ttl ms, size, event, data, idempotency key or '',
--       pub/sub channel (or '': the caller fans out, once replicas hold it), channel
local size, event, data, key = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local now = now_ms()
local epoch = epoch_of(ARGV[1])
expire_old(now)
if key ~= '' then
  local held = redis.call('HGET', keys, key)
  if held then
    local found = redis.call('XRANGE', stream, held, held)
    if #found == 1 then
      local fields = found[1][2]
      return {epoch, held, fields[6], fields[2], fields[4], 1}
    end
    redis.call('HDEL', keys, key)
  end
end
local offset = string.format('%d', redis.call('HINCRBY', meta, 'offset', 1))
if size > 0 then
  if key ~= '' then
    redis.call('XADD', stream, offset .. '-0', 'e', event, 'd', data, 't', now, 'k', key)
    redis.call('HSET', keys, key, offset)
  else
    redis.call('XADD', stream, offset .. '-0', 'e', event, 'd', data, 't', now)
  end
end
local excess = redis.call('XLEN', stream) - size
if excess > 0 then
  if redis.call('EXISTS', keys) == 1 then
    forget_keys(redis.call('XRANGE', stream, '-', '+', 'COUNT', excess))
  end
  redis.call('XTRIM', stream, 'MAXLEN', size)
end
keep(stream, ttl_ms)
keep(keys, ttl_ms)
keep(meta, ARGV[3])
if ARGV[8] ~= '' then
  redis.call('@PUBLISH@', ARGV[8], table.concat({ARGV[9], epoch, offset, now, event, data}, '\\n'))
end
return {epoch, offset, now, event, data, 0}
"""
)
# One server and Sentinel fan out with classic pub/sub; Redis Cluster with sharded pub/sub,
# whose channel (``<prefix>:live:{<channel>}``) shares the slot of the channel's keys.
APPEND = _APPEND.replace("@PUBLISH@", "PUBLISH")
SHARDED_APPEND = _APPEND.replace("@PUBLISH@", "SPUBLISH")


def _text(value: object) -> str:
    assert isinstance(value, bytes), value
    return value.decode()


def _offset_of(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


def entry_event(channel: str, epoch: str, entry: list[Any]) -> Event:
    """One stream entry (``[b"7-0", [b"e", name, b"d", data, b"t", ts, ...]]``) as an Event."""
    entry_id, fields = entry
    return Event(channel, epoch, _offset_of(entry_id), _text(fields[1]), fields[3], int(fields[5]))


def stored_event(channel: str, reply: list[Any]) -> Event:
    """APPEND's answer: the stored event, or the first one of a repeated idempotency key."""
    epoch, offset, ts, name, data, _repeated = reply
    return Event(channel, _text(epoch), int(offset), _text(name), data, int(ts))


def repeated(reply: list[Any]) -> bool:
    """Whether APPEND's answer is the first event of a repeated idempotency key."""
    return bool(int(reply[5]))


def live_body(event: Event) -> bytes:
    """The fan-out message of ``event``, as APPEND publishes it."""
    fields = [event.channel.encode(), event.epoch.encode(), b"%d" % event.offset]
    return b"\n".join([*fields, b"%d" % event.ts, event.event.encode(), event.data])


def live_event(body: bytes) -> Event:
    """A fan-out message as APPEND published it; ValueError if it is not one."""
    channel, epoch, offset, ts, name, data = body.split(b"\n", 5)
    return Event(channel.decode(), epoch.decode(), int(offset), name.decode(), data, int(ts))


def recent_page(channel: str, reply: list[Any]) -> HistoryPage:
    """RECENT's answer: the newest entries, put back in order, up to the channel's head."""
    raw_epoch, raw_last, entries = reply
    epoch, last = _text(raw_epoch), int(raw_last)
    events = tuple(entry_event(channel, epoch, entry) for entry in reversed(entries))
    return HistoryPage(events, Cursor(epoch, last))


def page_of(channel: str, since: Cursor | None, reply: list[Any]) -> HistoryPage:
    """READ's answer as a page, or a reset: never a silent skip (see brokers/base.py)."""
    raw_epoch, raw_last, raw_first, entries = reply
    epoch, last = _text(raw_epoch), int(raw_last)
    head = Cursor(epoch, last)
    if since is None or since == head:
        return HistoryPage((), head)
    if since.epoch != epoch or since.offset > last:
        return HistoryPage((), head, Reset(channel, head, "epoch"))
    first_held = _offset_of(raw_first) if raw_first else last + 1
    events = tuple(entry_event(channel, epoch, entry) for entry in entries)
    if since.offset + 1 < first_held or (events and events[0].offset != since.offset + 1):
        return HistoryPage((), head, Reset(channel, head, "gap"))
    return page_after(since, events, last)
