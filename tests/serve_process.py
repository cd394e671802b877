"""``tidings serve`` in a subprocess, as the tests that need a real process run it.

It reads the port from the ``listening on`` line, then keeps draining stderr in a thread so
that a chatty server never blocks on a full pipe; the log is kept for failure reports. It is
stopped by its own PID: SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque

TIDINGS = [sys.executable, "-m", "tidings.cli"]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class ServeProcess:
    """``tidings serve --port 0 <flags>``; call ``wait_listening`` before using ``port``.

    ``command`` is how to run ``tidings`` (this interpreter's package by default). Another
    server is run the same way by a subclass with its own ``argv`` (or one that calls
    ``_spawn`` with its own command line) and ``listening`` line.
    """

    listening = LISTENING  # the log line that gives the port

    def __init__(
        self, *flags: str, env: dict[str, str] | None = None, command: list[str] = TIDINGS
    ) -> None:
        self._spawn(self.argv(command, flags), env)

    def _spawn(self, argv: list[str], env: dict[str, str] | None) -> None:
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.log: deque[str] = deque(maxlen=300)
        self._logged = threading.Condition()
        self.port = 0
        self._reader: threading.Thread | None = None

    def argv(self, command: list[str], flags: tuple[str, ...]) -> list[str]:
        return [*command, "serve", "--port", "0", *flags]

    def wait_listening(self, timeout: float = 20.0) -> ServeProcess:
        """Read stderr until the port is known, then keep draining it in a thread."""
        assert self.process.stderr is not None
        timer = threading.Timer(timeout, self.kill)  # a hung start ends, never blocks
        timer.start()
        try:
            for line in self.process.stderr:
                self.log.append(line)
                match = self.listening.search(line)
                if match:
                    self.port = int(match[1])
                    break
        finally:
            timer.cancel()
        if not self.port:
            self.stop()
            raise AssertionError(f"{self.process.args} never said where it listens:\n{self.logs()}")
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        return self

    def _drain(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stderr:
                with self._logged:
                    self.log.append(line)
                    self._logged.notify_all()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until a line containing ``text`` has been logged (after ``wait_listening``)."""
        with self._logged:
            if not self._logged.wait_for(lambda: text in self.logs(), timeout):
                raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return "".join(self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, by PID: no drain, no goodbye, as a crashed machine."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stderr is not None:
            with contextlib.suppress(OSError):
                self.process.stderr.close()
