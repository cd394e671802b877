"""Channel names, namespaces and event names (docs/protocol.md section 1)."""

from __future__ import annotations

import re
from typing import NewType

from tidings.exceptions import InvalidChannel, InvalidField

Channel = NewType("Channel", str)

_CHANNEL = re.compile(r"[A-Za-z0-9_\-.:@/]{1,128}")
_EVENT_NAME = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
RESERVED_EVENT_PREFIX = "tidings."
DEFAULT_EVENT = "message"


def parse_channel(text: object) -> Channel:
    """Return ``text`` as a Channel, or raise InvalidChannel saying what is allowed."""
    if not isinstance(text, str) or _CHANNEL.fullmatch(text) is None:
        raise InvalidChannel(
            f"channel {text!r} is not valid: use 1 to 128 characters from A-Z a-z 0-9 _ - . : @ /"
        )
    return Channel(text)


def namespace_of(channel: str) -> str:
    """The part before the first ``:``; the default namespace is ``""``."""
    head, sep, _ = channel.partition(":")
    return head if sep else ""


def parse_event_name(text: object) -> str:
    """Validate a publisher's event name; ``tidings.*`` names belong to the server."""
    if text is None:
        return DEFAULT_EVENT
    if not isinstance(text, str) or _EVENT_NAME.fullmatch(text) is None:
        raise InvalidField(
            f"event {text!r} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ - . :"
        )
    if text.startswith(RESERVED_EVENT_PREFIX):
        raise InvalidField(f"event names starting with {RESERVED_EVENT_PREFIX!r} are reserved")
    return text
