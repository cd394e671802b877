"""What one worker knows of the other workers of its node (``tidings serve --workers N``).

The supervisor sends each worker, twice a second, the sum of the other workers' latest
figures and of the counters that dead workers left (``rest``), the reason some other worker
is not ready, if one is not, and how the workers have fared. ``/metrics``, ``/readyz`` and
``/admin`` add their own worker's live numbers to it, so that whichever worker takes the
request, it describes the whole node. The other workers' numbers are at most about a second
and a half old: each sends its figures once a second and the supervisor relays them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tidings.server.core.figures import Figures, figures_of

if TYPE_CHECKING:
    from tidings.server.core.node import Node


@dataclass(frozen=True, slots=True)
class Peers:
    """The rest of the node, as the supervisor last described it to this worker."""

    rest: Figures = field(default_factory=Figures)
    not_ready: str | None = None  # why another worker is not ready to serve
    workers: int = 1  # worker processes running now, this one included
    restarts: int = 0  # workers the supervisor started again after they died

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "rest": orjson.Fragment(self.rest.to_json()),
                "not_ready": self.not_ready,
                "workers": self.workers,
                "restarts": self.restarts,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Peers:
        """What the supervisor sent; raises ValueError (or TypeError) if it is not that."""
        values: Any = orjson.loads(data)
        if not isinstance(values, dict):
            raise ValueError("peers must be a JSON object")
        rest = Figures.from_json(orjson.dumps(values.pop("rest", {})))
        return cls(rest=rest, **values)


class PeersView:
    """The latest ``Peers`` a worker received; replaced whole, read by the handlers."""

    __slots__ = ("latest",)

    def __init__(self) -> None:
        self.latest = Peers()

    def whole(self, node: Node) -> Figures:
        """The node's figures: this worker's, live, and the others' latest."""
        return figures_of(node, process=True) + self.latest.rest
