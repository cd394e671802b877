"""Control between nodes on ``nats://``: a core subject for messages, a bucket for revocations.

- **Messages** (protocol/control.py) are core messages on ``<prefix>.control``, which every
  node subscribes to once per connection (nats-py replays it after a reconnect): at most
  once, like the fan-out of events, and apart from the event streams.
- **Revocations** live in the key-value bucket ``<prefix>_revoked`` (stream
  ``KV_<prefix>_revoked``), one key per sub (its base64url, as a key allows few characters),
  each value ``<before> <until>``. JetStream has no per-key lifetime before nats-server
  2.11, so the bucket's age limit is ``auth.max_token_seconds``, the longest a revocation
  lasts: a key is rewritten by every later revocation of its sub, and ages out once the
  last one is over. A read skips what is already over. A bucket found with a shorter age
  (the setting grew) has its age raised, so that no revocation ages out early.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Callable

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from tidings.brokers.nats_errors import translated
from tidings.brokers.nats_layout import NatsOptions
from tidings.protocol.control import (
    Control,
    Revocation,
    decode_control,
    decode_revocation,
    encode_control,
    encode_revocation,
)

log = logging.getLogger("tidings.brokers")

AT_ONCE = 100  # key-value reads in flight at once


def key_of(sub: str) -> str:
    return base64.urlsafe_b64encode(sub.encode()).decode().rstrip("=")


def sub_of(key: str) -> str:
    """ValueError if ``key`` is not one ``key_of`` made."""
    try:
        return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ValueError(f"not a revocation key: {key!r}") from error


class NatsControl:
    """The control half of the NATS broker."""

    def __init__(self, options: NatsOptions, max_token_seconds: float) -> None:
        self._options = options
        self._bucket_name = f"{options.prefix}_revoked"
        self._bucket_age = max_token_seconds
        self.subject = f"{options.prefix}.control"
        self._kv: KeyValue | None = None

    async def listen(self, client: Client, sink: Callable[[Control], None]) -> None:
        """Subscribe once per client: nats-py replays it after a reconnect."""

        async def receive(message: Msg) -> None:
            try:
                control = decode_control(message.data)
            except ValueError:
                log.warning("dropped a malformed control message: %r", message.data[:200])
                return
            sink(control)

        async with translated("listen for control messages"):
            await client.subscribe(self.subject, cb=receive)

    async def broadcast(self, client: Client, message: Control) -> None:
        async with translated("send a control message"):
            await client.publish(self.subject, encode_control(message))
            await client.flush(int(self._options.timeout) or 1)

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        if self._kv is None:
            async with translated("open the revocation bucket"):
                try:
                    self._kv = await js.key_value(self._bucket_name)
                    await self._keep_long_enough(js)
                except nats.js.errors.BucketNotFoundError:
                    self._kv = await js.create_key_value(
                        bucket=self._bucket_name,
                        history=1,
                        ttl=self._bucket_age,
                        replicas=self._options.replicas,
                        storage=StorageType(self._options.storage),
                    )
        return self._kv

    async def _keep_long_enough(self, js: JetStreamContext) -> None:
        info = await js.stream_info(f"KV_{self._bucket_name}")
        age = info.config.max_age
        if age is not None and 0 < age < self._bucket_age:
            await js.update_stream(dataclasses.replace(info.config, max_age=self._bucket_age))

    async def revoke(self, js: JetStreamContext, revocation: Revocation) -> None:
        kv = await self._bucket(js)
        async with translated("store a revocation"):
            await kv.put(key_of(revocation.sub), encode_revocation(revocation))

    async def revocations(self, js: JetStreamContext) -> list[Revocation]:
        """Every revocation not yet over. The stream's subject list names the keys (no
        consumer is made for a read); each is then read directly."""
        kv = await self._bucket(js)
        prefix = f"$KV.{self._bucket_name}."
        found: list[Revocation] = []
        now = time.time()

        async def read(key: str) -> None:
            try:
                item = await kv.get(key)
                revocation = decode_revocation(sub_of(key), item.value or b"")
            except (nats.js.errors.KeyNotFoundError, ValueError):
                return  # deleted, or not written by Tidings
            if revocation.until > now:
                found.append(revocation)

        async with translated("read the revocations"):
            info = await js.stream_info(f"KV_{self._bucket_name}", subjects_filter=prefix + ">")
            subjects = list((info.state.subjects or {}) if info.state else {})
            keys = [subject[len(prefix) :] for subject in subjects]
            for start in range(0, len(keys), AT_ONCE):
                await asyncio.gather(*(read(key) for key in keys[start : start + AT_ONCE]))
        return found
