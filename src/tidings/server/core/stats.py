"""Counters the node keeps about itself, read by ``/metrics`` and the admin page."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Plain integers, so the delivery path pays an addition, not a metrics library's lock."""

    published: int = 0
    resets: int = 0
    slow_consumers: int = 0
    opened_by_transport: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)

    def opened(self, transport: str) -> None:
        self.opened_by_transport[transport] = self.opened_by_transport.get(transport, 0) + 1

    def refused(self, reason: str) -> None:
        """Count one refusal (``unauthorized``, ``rate_limited``, ``max_connections``...)."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
