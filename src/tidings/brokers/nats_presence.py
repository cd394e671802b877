"""Presence on ``nats://``: a key-value bucket holds the entries, a core subject the changes.

- **Entries** live in the bucket ``<prefix>_presence`` (stream ``KV_<prefix>_presence``) under
  ``<channel token>.<client>``, each value ``<expiry ms> <entry JSON>``. JetStream has no
  per-key lifetime before nats-server 2.11, so the expiry is in the value: a list skips
  entries whose time is over, and a sweep deletes them. The bucket's own age limit
  (``BUCKET_AGE_FACTOR`` times the presence TTL) clears delete markers and what a vanished
  deployment left behind; every live entry is rewritten well within it.
- **One announcement per change**, without a lock: writes are conditional on the key's last
  revision. A node refreshes its entry with ``update(last=revision)``; if a sweep deleted it
  meanwhile, the update fails and the entry is created again, with a ``join``. A sweep (or a
  remove) deletes with ``last=revision`` too, so of two nodes sweeping one entry, or a sweep
  racing a refresh, exactly one write wins and only a winning delete announces a ``leave``.
- **Reads** ask the stream for the channel's keys (its subject list: JetStream answers at
  most 100,000, a ceiling for one channel's presence) and get each directly, so a list or a
  sweep makes no consumer.
- **Changes** are core messages on ``<prefix>.presence`` (at most once, like the fan-out of
  events), which every node subscribes to once: nothing on the event streams.
- Nodes' wall clocks decide expiry; keep them synchronised (NTP), as for the ``ts`` of events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from tidings.brokers.nats_errors import translated
from tidings.brokers.nats_layout import NatsOptions, token_of
from tidings.protocol.presence import (
    ChangeOp,
    PresenceChange,
    PresenceEntry,
    decode_change,
    encode_change,
    entry_from_json,
)

BUCKET_AGE_FACTOR = 8
AT_ONCE = 100  # key-value requests in flight at once
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's codes for a failed conditional write

Held = tuple[PresenceEntry, int, int]  # entry, expiry in ms, revision
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class NatsPresence:
    """The presence half of the NATS broker."""

    def __init__(self, options: NatsOptions, ttl_seconds: float) -> None:
        self._options = options
        self._bucket_name = f"{options.prefix}_presence"
        self._bucket_age = ttl_seconds * BUCKET_AGE_FACTOR
        self.subject = f"{options.prefix}.presence"
        self._kv: KeyValue | None = None
        self._revisions: dict[str, int] = {}  # this node's entries: key -> last revision

    @staticmethod
    def key(entry: PresenceEntry) -> str:
        return f"{token_of(entry.channel)}.{entry.client}"

    async def listen(self, client: Client, sink: Callable[[PresenceChange], None]) -> None:
        async def receive(message: Msg) -> None:
            try:
                change = decode_change(message.data)
            except ValueError:
                return  # not a Tidings presence change
            sink(change)

        async with translated("listen for presence changes"):
            await client.subscribe(self.subject, cb=receive)

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        if self._kv is None:
            async with translated("open the presence bucket"):
                try:
                    self._kv = await js.key_value(self._bucket_name)
                except nats.js.errors.BucketNotFoundError:
                    self._kv = await js.create_key_value(
                        bucket=self._bucket_name,
                        history=1,
                        ttl=self._bucket_age,
                        replicas=self._options.replicas,
                        storage=StorageType(self._options.storage),
                    )
        return self._kv

    async def add(
        self,
        js: JetStreamContext,
        client: Client,
        entries: Sequence[PresenceEntry],
        lifetime: float,
    ) -> None:
        kv = await self._bucket(js)
        expires = now_ms() + int(lifetime * 1000)

        async def add_one(entry: PresenceEntry) -> None:
            key = self.key(entry)
            value = b"%d " % expires + entry.as_json()
            known = self._revisions.get(key)
            if known is not None:
                try:
                    self._revisions[key] = await kv.update(key, value, last=known)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    pass  # swept (or lost): create it again, which is a join
            try:
                self._revisions[key] = await kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._revisions[key] = await kv.put(key, value)  # there, unknown here: refresh
                return
            await self._announce(client, "join", entry)

        async with translated("add presence entries"):
            await _in_parts(add_one, entries)

    async def remove(
        self, js: JetStreamContext, client: Client, entries: Sequence[PresenceEntry]
    ) -> None:
        kv = await self._bucket(js)

        async def remove_one(entry: PresenceEntry) -> None:
            key = self.key(entry)
            revision = self._revisions.pop(key, None)
            if revision is None:
                try:
                    revision = (await kv.get(key)).revision
                except nats.js.errors.KeyNotFoundError:
                    return
            if revision is None:
                return
            if await _delete(kv, key, revision):
                await self._announce(client, "leave", entry)

        async with translated("remove presence entries"):
            await _in_parts(remove_one, entries)

    async def entries(self, js: JetStreamContext, channel: str) -> list[PresenceEntry]:
        now = now_ms()
        return [entry for entry, expires, _ in await self._held(js, channel) if expires > now]

    async def sweep(self, js: JetStreamContext, client: Client, channels: Sequence[str]) -> None:
        kv = await self._bucket(js)
        for channel in channels:
            now = now_ms()
            over = [held for held in await self._held(js, channel) if held[1] <= now]

            async def sweep_one(held: Held) -> None:
                entry, _, revision = held
                if await _delete(kv, self.key(entry), revision):
                    await self._announce(client, "leave", entry)

            async with translated("sweep presence entries"):
                await _in_parts(sweep_one, over)

    async def _held(self, js: JetStreamContext, channel: str) -> list[Held]:
        """Every entry of ``channel`` in the bucket, expired or not, with its revision.

        The stream's subject list names the channel's keys (no consumer is made for a read);
        each is then read directly, and deleted ones are skipped.
        """
        kv = await self._bucket(js)
        pattern = f"$KV.{self._bucket_name}.{token_of(channel)}.*"
        async with translated(f"read the presence of {channel!r}"):
            info = await js.stream_info(f"KV_{self._bucket_name}", subjects_filter=pattern)
            subjects = list((info.state.subjects or {}) if info.state else {})
            keys = [subject.split(".", 2)[2] for subject in subjects]
            held: list[Held] = []

            async def read(key: str) -> None:
                try:
                    item = await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    return  # deleted: a marker is all that is left
                parsed = _parse(item.value)
                if parsed is not None and item.revision is not None:
                    held.append((parsed[0], parsed[1], item.revision))

            await _in_parts(read, keys)
        return held

    async def _announce(self, client: Client, op: ChangeOp, entry: PresenceEntry) -> None:
        await client.publish(self.subject, encode_change(op, entry.as_json()))


async def _delete(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete ``key`` if its last revision is still ``revision``; whether this call did."""
    try:
        await kv.delete(key, last=revision)
    except nats.js.errors.APIError as error:
        if error.err_code in WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


def _parse(value: bytes | None) -> tuple[PresenceEntry, int] | None:
    expires, _, body = (value or b"").partition(b" ")
    try:
        return entry_from_json(body), int(expires)
    except ValueError:
        return None  # not written by Tidings: it is nobody's presence


async def _in_parts(call: Callable[[T], Awaitable[None]], items: Sequence[T]) -> None:
    """``call`` on every item, ``AT_ONCE`` at a time."""
    for start in range(0, len(items), AT_ONCE):
        await asyncio.gather(*(call(item) for item in items[start : start + AT_ONCE]))
