"""Which of the package's modules run compiled, and whether one is older than its source.

``TIDINGS_COMPILE=1`` at install (setup.py; scripts/env.sh does it where a C compiler is
present) builds the modules on every request's path with mypyc: each extension sits beside
the ``.py`` it was built from and is imported in its place. An extension older than its
source runs code that is no longer there: the server says so when it starts, and the test
suite refuses to run on it.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).parent


def _extensions(package: Path) -> list[tuple[str, Path, Path]]:
    """(module name, source, extension) of every source with an extension beside it: a
    ``.py`` compiled by mypyc, or a module written in C (``.c``)."""
    found = []
    for source in sorted([*package.rglob("*.py"), *package.rglob("*.c")]):
        for suffix in EXTENSION_SUFFIXES:
            extension = source.with_name(source.stem + suffix)
            if extension.exists():
                parts = source.relative_to(package.parent).with_suffix("").parts
                found.append((".".join(parts), source, extension))
                break
    return found


def compiled_modules(package: Path = PACKAGE) -> list[str]:
    """The modules that run compiled, by name."""
    return [name for name, _, _ in _extensions(package)]


def stale_modules(package: Path = PACKAGE) -> list[str]:
    """Compiled modules whose source changed after they were built."""
    return [
        name
        for name, source, extension in _extensions(package)
        if source.stat().st_mtime > extension.stat().st_mtime
    ]


def running_compiled() -> list[str]:
    """The package's modules imported in this process from an extension, by name."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (name == "tidings" or name.startswith("tidings."))
        and str(getattr(module, "__file__", "")).endswith(tuple(EXTENSION_SUFFIXES))
    )


def describe() -> str:
    """For the server's start and the test report: how many of the imported modules run
    compiled."""
    count = len(running_compiled())
    return f"{count} modules compiled" if count else "interpreted"
