"""``tidings subscribe``: follow channels with the Python client and print their events.

stdout carries events only, one JSON object per line (the event object of docs/protocol.md section
1: ``channel``, ``id``, ``event``, ``data``, ``ts``), flushed as each arrives so that a pipe
(``| jq``) sees it at once; everything else goes to stderr. Reconnecting and resuming after a
drop is the client's work (:mod:`tidings.client.subscription`): an event is printed once,
whatever the network did. The command ends

- with 0 on Ctrl-C or SIGTERM, after ``--count`` events, or when stdout closes (``| head``);
- with 1 when the server refuses (its own ``4xx`` answer, printed), when no subscription could
  open within ``--open-timeout``, or when the client gives up;
- with 3 on a reset: history no longer covers the gap, so the events in between are lost. It
  names the channel and its new cursor, and prints the command that continues from there
  once the user has reloaded what they derived from the channel.

On every end after the subscriptions opened it prints that command, with each channel's
cursor as ``--since``, so nothing is missed between two runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from tidings.client import AUTO, DEFAULT_URL, ClientEvent, ResetEvent, Subscription, connect
from tidings.exceptions import ClientError, ServerRejected

__all__ = ["EXIT_RESET", "SubscribeCommand"]

EXIT_RESET = 3


@dataclass(frozen=True, slots=True)
class SubscribeCommand:
    """What ``tidings subscribe`` was asked; ``since`` holds one cursor per channel or none."""

    channels: tuple[str, ...]
    since: tuple[str, ...] = ()
    url: str = DEFAULT_URL
    transport: str = AUTO
    token: str | None = None
    count: int | None = None
    open_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.channels:
            raise ClientError("name at least one channel")
        if len(set(self.channels)) != len(self.channels):
            raise ClientError("a channel is named twice")
        if self.since and len(self.since) != len(self.channels):
            raise ClientError(
                f"give --since once per channel, in the order of the channels: "
                f"{len(self.channels)} channels, {len(self.since)} cursors"
            )
        if self.count is not None and self.count < 1:
            raise ClientError("--count must be at least 1")

    def resume_line(self, cursors: list[str]) -> str:
        """The command line that continues after ``cursors`` (the token is never shown)."""
        words = ["tidings", "subscribe", *self.channels]
        for cursor in cursors:
            words += ["--since", cursor]
        if self.url != DEFAULT_URL:
            words += ["--url", self.url]
        if self.transport != AUTO:
            words += ["--transport", self.transport]
        return shlex.join(words)

    def run(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
        """Run until an end described in the module docstring; the exit status."""
        return asyncio.run(_Run(self, out, err).main())


class _Run:
    """One run: the subscriptions, the printing, and the end everyone waits for."""

    def __init__(self, command: SubscribeCommand, out: TextIO, err: TextIO) -> None:
        self.command = command
        self.out = out
        self.err = err
        self.printed = 0
        self.subscriptions: list[Subscription] = []
        # channel -> the cursor before an event that was handed out but not printed
        self.unprinted: dict[str, str | None] = {}
        self.ended: asyncio.Future[int] | None = None

    def say(self, text: str) -> None:
        print(f"tidings: {text}", file=self.err, flush=True)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self.ended = loop.create_future()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, self.end, 0)
        command = self.command
        try:
            async with connect(command.url, transport=command.transport, token=command.token) as c:
                since = command.since or (None,) * len(command.channels)
                self.subscriptions = [
                    c.subscribe(channel, cursor)
                    for channel, cursor in zip(command.channels, since, strict=True)
                ]
                status = await self._open()
                if status is not None:
                    return status
                followers = [asyncio.create_task(self._follow(s)) for s in self.subscriptions]
                status = await self.ended
                for follower in followers:
                    follower.cancel()
                await asyncio.gather(*followers, return_exceptions=True)
        except ClientError as error:  # a bad URL or transport name: nothing was opened
            self.say(str(error))
            return 1
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
        if self._cursors():
            self.say("to continue from here: " + self.command.resume_line(self._cursors()))
        return status

    async def _open(self) -> int | None:
        """Open every subscription within ``open_timeout``; an exit status if that failed."""
        opening: asyncio.Future[None] = asyncio.ensure_future(self._open_all())
        assert self.ended is not None
        either: list[asyncio.Future[Any]] = [opening, self.ended]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not opening.done():  # Ctrl-C while connecting
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            return self.ended.result()
        try:
            opening.result()
        except ServerRejected as refusal:
            self._refused(refusal)
            return 1
        except TimeoutError:
            waiting = [s for s in self.subscriptions if s.connections == 0]
            stuck = waiting[0] if waiting else self.subscriptions[0]
            self.say(
                f"could not subscribe to {stuck.channel!r} at {self.command.url} within "
                f"{self.command.open_timeout:g} s: {stuck.last_failure or 'no answer'}"
            )
            return 1
        except ClientError as error:
            self.say(str(error))
            return 1
        for opened in self.subscriptions:
            start = f"after {opened.cursor}" if opened.cursor else "from now"
            self.say(f"subscribed to {opened.channel!r} {start} over {opened.transport}")
        return None

    async def _open_all(self) -> None:
        async with asyncio.timeout(self.command.open_timeout):
            for subscription in self.subscriptions:
                await subscription.open()

    async def _follow(self, subscription: Subscription) -> None:
        try:
            while True:
                # Only positions lie between this cursor and the next item: if the item is
                # never printed, continuing from here prints it, and nothing twice.
                before = subscription.cursor
                item = await anext(subscription)
                if isinstance(item, ResetEvent):
                    self._reset(item)
                    return
                if not self._print(item):
                    self.unprinted[subscription.channel] = before
                    return
        except StopAsyncIteration:
            return
        except ServerRejected as refusal:
            self._refused(refusal)
        except ClientError as error:
            self.say(str(error))
            self.end(1)

    def _print(self, event: ClientEvent) -> bool:
        """Write ``event`` as a JSON line; False if it was not (the run is over)."""
        if self.ended is None or self.ended.done():
            return False
        line = {
            "channel": event.channel,
            "id": event.id,
            "event": event.event,
            "data": event.data,
            "ts": event.ts,
        }
        try:
            self.out.write(orjson.dumps(line).decode() + "\n")
            self.out.flush()
        except BrokenPipeError:
            _silence_stdout(self.out)
            self.end(0)
            return False
        self.printed += 1
        if self.command.count is not None and self.printed >= self.command.count:
            self.end(0)
        return True

    def _reset(self, reset: ResetEvent) -> None:
        why = {"gap": "history no longer holds the events after its cursor"}.get(
            reset.reason, "the server lost its history (a new epoch)"
        )
        self.say(
            f"channel {reset.channel!r} was reset ({reset.reason}): {why}. Its new cursor is "
            f"{reset.id}; reload what you built from it, then continue."
        )
        self.end(EXIT_RESET)

    def _refused(self, refusal: ServerRejected) -> None:
        hint = " (give a token with --token or TIDINGS_TOKEN)" if refusal.status == 401 else ""
        self.say(f"the server refused: {refusal}{hint}")
        self.end(1)

    def end(self, status: int) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(status)

    def _cursors(self) -> list[str]:
        """Each channel's cursor after its last printed event; [] while one is unknown."""
        cursors = [self.unprinted.get(s.channel, s.cursor) for s in self.subscriptions]
        return [c for c in cursors if c is not None] if None not in cursors else []


def _silence_stdout(out: TextIO) -> None:
    """The reader of stdout left: point it at /dev/null so the exit flush cannot fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
