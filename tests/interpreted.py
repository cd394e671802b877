"""``pytest -p tests.interpreted``: import Tidings from its ``.py`` files even where compiled
extensions sit beside them, so one checkout tests both the compiled modules and the
interpreted fallback that runs where no C compiler was present (scripts/test runs a part of
the suite so). A module written in C, with no ``.py`` to fall back on, is not found, as where
nothing was compiled.

A plugin, not a conftest: it must be in place before anything imports ``tidings``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, SourceFileLoader
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType

PACKAGE = "tidings"


class SourceOnly(MetaPathFinder):
    """Finds the package's modules as source files; everything else as usual."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        name = fullname.rpartition(".")[2]
        for folder in path or sys.path:
            package = Path(folder) / name / "__init__.py"
            if package.exists():
                loader = SourceFileLoader(fullname, str(package))
                folders = [str(package.parent)]
                return spec_from_file_location(
                    fullname, package, loader=loader, submodule_search_locations=folders
                )
            module = Path(folder) / f"{name}.py"
            if module.exists():
                loader = SourceFileLoader(fullname, str(module))
                return spec_from_file_location(fullname, module, loader=loader)
        raise ModuleNotFoundError(f"no source of {fullname} (tests.interpreted)", name=fullname)


if any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in sys.modules):
    raise RuntimeError("tests.interpreted must load before anything imports tidings")
sys.meta_path.insert(0, SourceOnly())
