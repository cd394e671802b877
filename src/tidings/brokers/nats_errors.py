"""NATS's exceptions end here: the hub only ever sees BrokerUnavailable."""

from __future__ import annotations

import asyncio

import nats.errors

from tidings.exceptions import BrokerUnavailable

FOREIGN_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


class translated:
    """``async with translated("publish to 'news'"):`` turns NATS errors into BrokerUnavailable."""

    __slots__ = ("doing",)

    def __init__(self, doing: str) -> None:
        self.doing = doing

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        if isinstance(error, FOREIGN_ERRORS):
            reason = str(error) or type(error).__name__
            raise BrokerUnavailable(f"NATS could not {self.doing}: {reason}") from error
