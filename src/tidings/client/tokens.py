"""The connection token (docs/protocol.md section 3) a client presents, and getting a new one.

A token is a fixed string, or a callable (sync or async) that returns a fresh one. The
callable is asked at the first connection and again whenever the server refuses the token it
has: a ``401`` on any request or handshake, or a WebSocket close ``4001`` (expired on an open
connection). Every subscription of a client shares one :class:`Tokens`, so when the shared
WebSocket closes with ``4001`` the callable is asked once, not once per channel.

A server that keeps refusing freshly fetched tokens (a wrong secret, a clock far off) must not
be hammered: the first refresh after an accepted token is immediate (the token just expired),
the ones after it wait the client's backoff, and after ``token_retries`` refreshed tokens
refused in a row the refusal is raised to the application.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from tidings.client.backoff import Backoff
from tidings.exceptions import ClientError, ServerRejected

__all__ = ["TokenSource", "Tokens"]

TokenSource = str | Callable[[], str | Awaitable[str]]


class Tokens:
    """The current token, its ``generation`` (how many times it was fetched) and its renewal."""

    def __init__(self, source: TokenSource | None, backoff: Backoff, retries: int) -> None:
        if source is not None and not isinstance(source, str) and not callable(source):
            raise ClientError(f"token must be a string or a callable, not {type(source)}")
        self._source = source
        self._backoff = backoff
        self._retries = retries
        self.token: str | None = source if isinstance(source, str) else None
        self.generation = 0
        self._refused = 0  # fresh tokens refused since one was last accepted
        self._fetching = asyncio.Lock()

    @property
    def renewable(self) -> bool:
        return callable(self._source)

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``, or nothing without a token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def ready(self) -> int:
        """Fetch the first token if there is none yet; the generation now in use."""
        if self.token is None and self.renewable:
            async with self._fetching:
                if self.token is None:
                    await self._fetch()
        return self.generation

    def accepted(self) -> None:
        """The server took the current token: the next refusal is an expiry, not a loop."""
        self._refused = 0

    async def renew(self, refusal: ServerRejected, seen: int) -> None:
        """Replace the token of generation ``seen`` that the server refused with ``refusal``.

        Raises ``refusal`` when the token cannot be renewed (a fixed string) or when
        ``token_retries`` renewed tokens were refused in a row. If the token was renewed
        since ``seen`` (another subscription got there first), the new one is tried as is.
        """
        if not self.renewable:
            raise refusal
        async with self._fetching:
            if seen != self.generation:
                return
            if self._refused >= self._retries:
                raise ServerRejected(
                    refusal.status,
                    refusal.code,
                    f"{refusal.message} (after {self._refused} renewed tokens were refused"
                    " in a row)",
                )
            if self._refused:
                await asyncio.sleep(self._backoff.delay(self._refused - 1))
            self._refused += 1
            await self._fetch()

    async def _fetch(self) -> None:
        source = self._source
        assert callable(source)
        try:
            token = source()
            if inspect.isawaitable(token):
                token = await token
        except Exception as error:
            raise ClientError(f"the token callable failed: {error!r}") from error
        if not isinstance(token, str) or not token:
            raise ClientError(f"the token callable must return a non-empty string, not {token!r}")
        self.token = token
        self.generation += 1
