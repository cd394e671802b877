"""Who is on a connection, and what its token lets it do (PROTOCOL.md section 3).

A token's ``channels`` and ``publish`` claims list channel names and prefix patterns:
``chat:*`` allows every channel whose name starts with ``chat:``, and ``*`` allows all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified claims of a connection token; ``ANONYMOUS`` when there is none."""

    sub: str | None = None
    info: Any = None
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires_at: float | None = None  # seconds since the epoch (the token's exp)

    def may_subscribe(self, channel: str) -> bool:
        return allows(self.channels, channel)

    def may_publish(self, channel: str) -> bool:
        return allows(self.publish, channel)


ANONYMOUS = Identity()


def allows(patterns: tuple[str, ...], channel: str) -> bool:
    """Whether ``channel`` is one of ``patterns`` or starts with a ``prefix*`` among them."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if channel.startswith(pattern[:-1]):
                return True
        elif pattern == channel:
            return True
    return False
