"""The revoked subs this node refuses tokens of (docs/protocol.md sections 3 and 7).

The broker keeps every revocation (brokers/base.py); the node reads them all as it starts
and again every ``RELOAD_SECONDS`` (a control message a node missed during an outage is
then made good), and adds each one it hears of at once. Checking a token is then one
dictionary look-up, with no I/O, on every verification.
"""

from __future__ import annotations

import time

from tidings.protocol.control import Revocation
from tidings.protocol.identity import Identity

RELOAD_SECONDS = 10.0


class Revocations:
    """Per sub, the revocation in force; a later one replaces an earlier one."""

    __slots__ = ("by_sub", "loaded")

    def __init__(self) -> None:
        self.by_sub: dict[str, Revocation] = {}
        self.loaded = False  # the broker's list was read at least once

    def add(self, revocation: Revocation) -> None:
        held = self.by_sub.get(revocation.sub)
        if held is None or revocation.before >= held.before:
            self.by_sub[revocation.sub] = revocation

    def holds(self, revocation: Revocation) -> bool:
        """Whether ``revocation`` (or a later one of its sub) is already in force here."""
        held = self.by_sub.get(revocation.sub)
        return held is not None and held.before >= revocation.before

    def load(self, revocations: list[Revocation]) -> None:
        """The broker's list: add what is new, forget what is over."""
        now = time.time()
        for sub, held in list(self.by_sub.items()):
            if held.until <= now:
                del self.by_sub[sub]
        for revocation in revocations:
            self.add(revocation)
        self.loaded = True

    def refuses(self, identity: Identity) -> bool:
        sub = identity.sub
        if sub is None or not self.by_sub:
            return False
        revocation = self.by_sub.get(sub)
        return revocation is not None and revocation.refuses(identity.issued_at, time.time())

    def __len__(self) -> int:
        return len(self.by_sub)
