"""Brokers by URL scheme. Each entry imports its module only when used (optional extras)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
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


def _redis_module(module: str, name: str) -> Any:
    """``name`` from ``tidings.brokers.<module>``, which needs the redis extra."""
    try:
        return getattr(importlib.import_module(f"tidings.brokers.{module}"), name)
    except ImportError as error:
        if error.name != "redis" and not (error.name or "").startswith("redis."):
            raise
        raise ConfigError(
            "server.broker", "redis:// needs the redis extra: pip install tidings[redis]"
        ) from error


REGISTRY: dict[str, Callable[[], Any]] = {"memory": _memory, "nats": _nats}
REGISTRY["redis"] = REGISTRY["rediss"] = partial(_redis_module, "redis", "RedisBroker")
REGISTRY["redis+sentinel"] = partial(_redis_module, "redis_sentinel", "SentinelBroker")
REGISTRY["redis+cluster"] = partial(_redis_module, "redis_cluster", "ClusterBroker")

__all__ = ["REGISTRY", "Broker", "HistoryPage", "broker_for"]
