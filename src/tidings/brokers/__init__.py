"""Brokers by URL scheme. Each entry imports its module only when used (optional extras)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidings.brokers.base import Broker, HistoryPage, broker_for
from tidings.exceptions import ConfigError


def _memory() -> Any:
    from tidings.brokers.memory import MemoryBroker

    return MemoryBroker


def _nats() -> Any:
    try:
        from tidings.brokers.nats import NatsBroker
    except ImportError as error:
        if error.name != "nats" and not (error.name or "").startswith("nats."):
            raise
        raise ConfigError(
            "server.broker", "nats:// needs the nats extra: pip install tidings[nats]"
        ) from error
    return NatsBroker


def _redis() -> Any:
    try:
        from tidings.brokers.redis import RedisBroker
    except ImportError as error:
        if error.name != "redis" and not (error.name or "").startswith("redis."):
            raise
        raise ConfigError(
            "server.broker", "redis:// needs the redis extra: pip install tidings[redis]"
        ) from error
    return RedisBroker


REGISTRY: dict[str, Callable[[], Any]] = {"memory": _memory, "redis": _redis, "rediss": _redis}
REGISTRY["nats"] = _nats

__all__ = ["REGISTRY", "Broker", "HistoryPage", "broker_for"]
