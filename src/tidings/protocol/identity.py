"""Who is on a connection, and what its token lets it do (docs/protocol.md section 3).

A token's ``channels`` and ``publish`` claims list channel names and prefix patterns:
``chat:*`` allows every channel whose name starts with ``chat:``, and ``*`` allows all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidings.exceptions import Unauthorized

# a channel name, or a prefix of one followed by ``*`` (``*`` alone allows every channel)
_PATTERN = re.compile(r"[A-Za-z0-9_\-.:@/]{1,128}|[A-Za-z0-9_\-.:@/]{0,127}\*")


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified claims of a connection token; ``ANONYMOUS`` when there is none."""

    sub: str | None = None
    info: Any = None
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires_at: float | None = None  # seconds since the epoch (the token's exp)
    issued_at: float | None = None  # the token's iat, if it has one (revocations read it)

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


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """The Identity of a verified token's claims; a claim of the wrong type is a 401.

    ``exp`` is required and already checked by the signature layer; ``sub`` is a string,
    ``channels`` and ``publish`` are lists of names or ``prefix*`` patterns, ``info`` any JSON.
    """
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise Unauthorized("the token's sub claim must be a string")
    iat = claims.get("iat")
    if iat is not None and (isinstance(iat, bool) or not isinstance(iat, int | float)):
        raise Unauthorized("the token's iat claim must be a number of seconds")
    return Identity(
        sub=sub,
        info=claims.get("info"),
        channels=_patterns(claims, "channels"),
        publish=_patterns(claims, "publish"),
        expires_at=float(int(claims["exp"])),  # whole seconds, as the exp check counts them
        issued_at=float(iat) if iat is not None else None,
    )


def _patterns(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(
        isinstance(item, str) and _PATTERN.fullmatch(item) for item in value
    ):
        raise Unauthorized(
            f"the token's {name} claim must be a list of channel names or prefix patterns "
            "such as chat:*"
        )
    return tuple(value)
