"""The event loop every command of the standalone server runs on: uvloop when installed."""

from __future__ import annotations

import asyncio
import logging


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:
        logging.getLogger("tidings").warning("uvloop is not installed: using asyncio's own loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
