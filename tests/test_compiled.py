"""Which modules run compiled, and which extensions are older than their source."""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from tidings.compiled import compiled_modules, describe, running_compiled, stale_modules


def package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for name in ("__init__.py", "plain.py", "fast.py", "sub/__init__.py", "sub/deep.py"):
        (root / name).write_text("")
    return root


def build(source: Path, seconds_after: float) -> Path:
    extension = source.with_name(source.stem + EXTENSION_SUFFIXES[0])
    extension.write_bytes(b"")
    at = source.stat().st_mtime + seconds_after
    os.utime(extension, (at, at))
    return extension


def test_a_module_is_compiled_when_its_extension_sits_beside_its_source(tmp_path: Path) -> None:
    root = package(tmp_path)
    build(root / "fast.py", 10)
    build(root / "sub" / "deep.py", 10)
    assert compiled_modules(root) == ["pkg.fast", "pkg.sub.deep"]
    assert stale_modules(root) == []


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    root = package(tmp_path)
    build(root / "fast.py", -10)  # the source was edited after the build
    build(root / "sub" / "deep.py", 10)
    assert stale_modules(root) == ["pkg.fast"]


def test_a_module_written_in_c_counts_and_goes_stale_as_its_source_changes(
    tmp_path: Path,
) -> None:
    root = package(tmp_path)
    (root / "sub" / "_reader.c").write_text("")
    (root / "sub" / "_other.c").write_text("")  # not built: not a module of this process
    build(root / "sub" / "_reader.c", 10)
    assert compiled_modules(root) == ["pkg.sub._reader"]
    assert stale_modules(root) == []
    build(root / "sub" / "_reader.c", -10)
    assert stale_modules(root) == ["pkg.sub._reader"]


def test_a_package_without_extensions_is_interpreted(tmp_path: Path) -> None:
    assert compiled_modules(package(tmp_path)) == []


def test_the_description_counts_the_modules_this_process_runs_compiled() -> None:
    import tidings.server.uvloop.http as edge

    compiled = running_compiled()
    assert ("tidings.server.uvloop.http" in compiled) == (not str(edge.__file__).endswith(".py"))
    assert set(compiled) <= set(compiled_modules())
    assert describe() == (f"{len(compiled)} modules compiled" if compiled else "interpreted")
