"""Tidings inside an ASGI application: ``tidings.asgi.app()`` (see :mod:`tidings.asgi.mount`)."""

from tidings.asgi.mount import TidingsApp, app

__all__ = ["TidingsApp", "app"]
