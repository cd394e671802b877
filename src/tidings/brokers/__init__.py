"""Brokers by URL scheme. Each entry imports its module only when used (optional extras)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidings.brokers.base import Broker, HistoryPage, broker_for


def _memory() -> Any:
    from tidings.brokers.memory import MemoryBroker

    return MemoryBroker


REGISTRY: dict[str, Callable[[], Any]] = {"memory": _memory}

__all__ = ["REGISTRY", "Broker", "HistoryPage", "broker_for"]
