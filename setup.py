"""Build: the package is pure Python; with ``TIDINGS_COMPILE=1`` the modules that serve every
request and delivery are also compiled to C extensions by mypyc, from the same source.

The compiled modules run the same code, with their type annotations checked at run time; an
interpreter that finds no extension imports the ``.py`` beside it. ``scripts/env.sh`` builds
them when a C compiler and Python's headers are there (``TIDINGS_COMPILE=0`` to skip), and
``tidings.compiled`` tells which modules a process runs compiled. docs/production.md says
more.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

# Every request, delivery and fan-out runs through these; the rest (configuration, the CLI,
# the Redis and NATS brokers, the ASGI mount, clients, the lab) stays interpreted.
COMPILED = [
    "src/tidings/protocol/channel.py",
    "src/tidings/protocol/cursor.py",
    "src/tidings/protocol/event.py",
    "src/tidings/protocol/fragments.py",
    "src/tidings/protocol/http.py",
    "src/tidings/protocol/identity.py",
    "src/tidings/protocol/poll.py",
    "src/tidings/protocol/query.py",
    "src/tidings/protocol/sse.py",
    "src/tidings/protocol/ws.py",
    "src/tidings/brokers/base.py",
    "src/tidings/brokers/memory.py",
    "src/tidings/brokers/memory_log.py",
    "src/tidings/hub/follow.py",
    "src/tidings/hub/hub.py",
    "src/tidings/hub/presence.py",
    "src/tidings/hub/reads.py",
    "src/tidings/hub/tail.py",
    "src/tidings/hub/tally.py",
    "src/tidings/hub/timers.py",
    "src/tidings/server/core/access.py",
    "src/tidings/server/core/api/publish.py",
    "src/tidings/server/core/exchange.py",
    "src/tidings/server/core/hooked.py",
    "src/tidings/server/core/limits.py",
    "src/tidings/server/core/node.py",
    "src/tidings/server/core/request.py",
    "src/tidings/server/core/response.py",
    "src/tidings/server/core/routes.py",
    "src/tidings/server/core/stats.py",
    "src/tidings/server/core/transports/poll.py",
    "src/tidings/server/core/transports/sse.py",
    "src/tidings/server/core/transports/stream.py",
    "src/tidings/server/core/transports/websocket.py",
    "src/tidings/server/uvloop/http.py",
    "src/tidings/server/uvloop/websocket.py",
]


# Written in C, built with them: the standalone edge reads plain request heads in one call
# (src/tidings/server/uvloop/_heads.c); without it httptools reads every head.
HEADS = Extension(
    "tidings.server.uvloop._heads",
    ["src/tidings/server/uvloop/_heads.c"],
    extra_compile_args=["-O3"],
)


def extensions() -> list[object]:
    if os.environ.get("TIDINGS_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return [*mypycify(COMPILED, opt_level="3"), HEADS]


setup(ext_modules=extensions())
