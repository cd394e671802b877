"""The garbage collector of a process that serves: fewer collections, none of start-up's heap.

CPython's cyclic collector walks the young objects after every 700 new container objects,
and the whole heap after a hundred such walks (once enough objects outlived two). A node
holding 10,000 long polls makes a request, its headers and a waiter per delivery, and those
live until the next event: they outlive the young walks, the full walks come often, and each
visits every connection's objects. ``bench/edge_cost.py long_poll --subs 10000`` spent 14-19
us of Python per delivery with the defaults and about 9 us with the collector off. What a
request makes is freed by reference counting; the collector is there for the rare cycle
(an exception's traceback, a closure), so it can run far less often:

- once listening, :func:`tune_collector` collects what start-up left and freezes the rest
  (modules, routes, settings, the broker's client) into the permanent generation, which no
  walk visits again;
- a young walk comes after ``YOUNG_THRESHOLD`` new container objects instead of 700; the
  older generations keep CPython's ratios, so a full walk is a hundred young ones apart.

The processes of ``tidings serve`` do this once listening. The ASGI mount lives in the
application's process, whose collector is the application's to set: it may call
``tidings.asgi.tune_collector()`` once started, and gets the same.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Set this process's collector for serving: call it once, when everything the process
    loads at start-up is loaded (the server listens, the application has started)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
