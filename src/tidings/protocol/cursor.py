"""Cursors (``<epoch>.<offset>``) and cursor lists (docs/protocol.md section 1).

Only the server builds and compares cursors; clients echo them back.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Sequence
from typing import Final

from tidings.exceptions import InvalidCursor

_CURSOR = re.compile(r"([A-Za-z0-9]{1,16})\.(0|[1-9][0-9]{0,18})")
_EPOCH_ALPHABET = string.ascii_letters + string.digits
EPOCH_LENGTH = 8


class Cursor:
    """A position in one channel's stream: the events up to ``offset`` of ``epoch``.

    A plain class, equal and hashed by its fields, not a frozen dataclass: compiled, a frozen
    dataclass is built by the ``__init__`` that ``dataclasses`` writes at import, which runs
    interpreted (about 3,500 instructions a cursor, and every event makes one). Nothing
    changes a cursor once made (its fields are ``Final``).
    """

    __slots__ = ("epoch", "offset")

    def __init__(self, epoch: str, offset: int) -> None:
        self.epoch: Final = epoch
        self.offset: Final = offset

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cursor):
            return NotImplemented
        return self.offset == other.offset and self.epoch == other.epoch

    def __hash__(self) -> int:
        return hash((self.epoch, self.offset))

    def __repr__(self) -> str:
        return f"Cursor(epoch={self.epoch!r}, offset={self.offset!r})"

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """``<epoch>.<offset>``, as clients send it back (a method: compiled, ``str()`` of a
        cursor goes through the type's slot and costs several times the call)."""
        return f"{self.epoch}.{self.offset}"

    def next(self) -> Cursor:
        return Cursor(self.epoch, self.offset + 1)


def parse_cursor(text: str) -> Cursor:
    """Parse ``k3x9.42``; anything else is InvalidCursor (a 400, never a reset)."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidCursor(
            f"cursor {text[:64]!r} is not valid: expected <epoch>.<offset> as the server gave it"
        )
    return Cursor(match[1], int(match[2]))


def parse_cursor_list(text: str, count: int) -> list[Cursor]:
    """Parse exactly ``count`` comma-separated cursors, one per requested channel."""
    parts = text.split(",")
    if len(parts) != count:
        raise InvalidCursor(
            f"cursor list has {len(parts)} cursors for {count} channels: give one per channel,"
            " in the order the channels were requested"
        )
    return [parse_cursor(part) for part in parts]


def format_cursor_list(cursors: Sequence[Cursor]) -> str:
    if len(cursors) == 1:  # every single-channel poll
        return cursors[0].text()
    return ",".join([cursor.text() for cursor in cursors])


def new_epoch() -> str:
    """A random epoch: a fresh one names a new lifetime of a channel's stream."""
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(EPOCH_LENGTH))
