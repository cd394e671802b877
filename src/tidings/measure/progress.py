"""A plain-text progress bar on stderr: one line redrawn with a carriage return."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressBar"]

WIDTH = 30
REDRAW_SECONDS = 0.1  # a publish loop reports far more often than anyone can read


class ProgressBar:
    """``bar(what, fraction)`` redraws at most ten times a second; ``finish()`` ends the line."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._drawn = 0.0
        self._started = time.monotonic()
        self._width = 0

    def __call__(self, what: str, fraction: float) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._drawn < REDRAW_SECONDS and fraction < 1):
            return
        self._drawn = now
        filled = round(WIDTH * min(1.0, max(0.0, fraction)))
        bar = "#" * filled + "." * (WIDTH - filled)
        line = f"[{bar}] {fraction:4.0%} {now - self._started:5.0f} s  {what}"
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._width:
            self._stream.write("\n")
            self._stream.flush()
