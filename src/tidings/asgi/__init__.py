"""Tidings inside an ASGI application: ``tidings.asgi.app()`` (see :mod:`tidings.asgi.mount`)."""

from tidings.asgi.mount import TidingsApp, app
from tidings.server.collector import tune_collector
from tidings.server.core.hooks import Allow, HookCall, HookFunctions

__all__ = ["Allow", "HookCall", "HookFunctions", "TidingsApp", "app", "tune_collector"]
