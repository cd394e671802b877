"""How long to wait before reconnecting: exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads a crowd of clients
that lost the same server over the whole window instead of bringing them back in waves; see
"Exponential Backoff And Jitter" on the AWS Architecture Blog. A delay the server asked for
(an SSE ``retry:``, a ``Retry-After``, the random pause after a WebSocket ``1001``/``1012``)
is a floor: the client never comes back sooner than the server wants.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.exceptions import ClientError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial`` seconds doubling (``multiplier``) up to ``maximum``, with full jitter.

    ``random`` returns a float in ``[0, 1)``; inject a fixed one to make delays predictable.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    random: Callable[[], float] = field(default=_random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ClientError(f"backoff needs 0 < initial <= maximum, not {self}")
        if self.multiplier < 1:
            raise ClientError(f"backoff multiplier must be at least 1, not {self.multiplier}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of the ``attempt``-th retry in a row (counting from 0)."""
        if attempt <= 0:
            return self.initial
        # Capped before it can overflow: 2.0 ** 1100 is inf, and inf * 0 is nan.
        growth = self.multiplier ** min(attempt, 64)
        return min(self.maximum, self.initial * growth)

    def delay(self, attempt: int, server_delay: float | None = None) -> float:
        """A draw in ``[0, ceiling(attempt))``, but never less than what the server asked."""
        drawn = self.random() * self.ceiling(attempt)
        return max(drawn, server_delay or 0.0)
