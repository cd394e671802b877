"""The examples as their READMEs run them: ``python examples/<name>/app.py --port 0`` in a
subprocess, driven by Chromium (the browser fixtures of tests/e2e).

With ``TIDINGS_EXAMPLE_SCREENSHOTS=1`` each test also writes its example's
``screenshot.png`` (800x500), at the moment its README describes.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize

from tests.e2e.conftest import FAST_ENV, browser
from tests.serve_process import ServeProcess

__all__ = ["ExampleProcess", "browser", "example", "open_page", "screenshot"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VIEWPORT: ViewportSize = {"width": 800, "height": 500}


class ExampleProcess(ServeProcess):
    """``examples/<name>/app.py --port 0``, ready once uvicorn says where it listens."""

    listening = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

    def __init__(self, name: str, *flags: str, env: dict[str, str] | None = None) -> None:
        self.script = EXAMPLES / name / "app.py"
        super().__init__(*flags, env={**FAST_ENV, **(env or {})}, command=[sys.executable])
        self.wait_listening()

    def argv(self, command: list[str], flags: tuple[str, ...]) -> list[str]:
        return [*command, str(self.script), "--port", "0", *flags]


@pytest.fixture
def example() -> Iterator[Callable[..., ExampleProcess]]:
    """``example("chat")`` starts that example (``kind``: a subclass that knows more of its
    output); every one is stopped, by its PID, at the end."""
    started: list[ExampleProcess] = []

    def start(
        name: str,
        *flags: str,
        env: dict[str, str] | None = None,
        kind: type[ExampleProcess] = ExampleProcess,
    ) -> ExampleProcess:
        process = kind(name, *flags, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def screenshot() -> Callable[..., None]:
    """``screenshot(page, "chat")`` writes examples/chat/screenshot.png when asked to; with
    ``when``, a JavaScript condition to wait for first (a fuller picture)."""

    def take(shown: Page, name: str, when: str | None = None) -> None:
        if os.environ.get("TIDINGS_EXAMPLE_SCREENSHOTS") != "1":
            return
        if when is not None:
            shown.wait_for_function(when, timeout=60_000)
        shown.screenshot(path=str(EXAMPLES / name / "screenshot.png"))

    return take


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """``open_page()``: a page of 800x500 in a context of its own (its own storage and
    cookies, as another person's browser); all are closed at the end."""
    contexts = []

    def make() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
