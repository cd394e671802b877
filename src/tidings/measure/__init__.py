"""``tidings bench``: the four techniques measured against a running server.

:mod:`~tidings.measure.run` drives the load and measures, :mod:`~tidings.measure.relay`
counts the subscribers' bytes and requests, :mod:`~tidings.measure.process` reads a local
server's CPU and memory, :mod:`~tidings.measure.table` prints the comparison table.
"""

from tidings.measure.run import BenchPlan, Measured, run_bench
from tidings.measure.table import render

__all__ = ["BenchPlan", "Measured", "render", "run_bench"]
