"""js/ as an npm package: what ``npm pack`` puts in the tarball, its TypeScript declarations
checked by ``tsc`` against a typed example as a front-end project would import it, and its
version, which is the Python package's.

TypeScript comes from the npm registry, at the version pinned in js/package.json, into a cache
outside the repository (``$XDG_CACHE_HOME/tidings-tests``). Without npm or the registry these
tests skip loudly; with CI=true they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
PACKAGE = json.loads((JS / "package.json").read_text())
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidings-tests"
SHIPPED = ["README.md", "package.json", "tidings.d.ts", "tidings.js"]
INSTALL_SCRIPTS = {"preinstall", "install", "postinstall", "prepare", "prepack", "postpack"}
# Both ways a front-end project resolves a package: bundlers, and Node's own ESM rules.
RESOLUTIONS = [("esnext", "bundler"), ("node16", "node16")]


def missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI must run the npm package tests")
    pytest.skip(f"{what.upper()}: the npm package tests did not run")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    assert found is not None
    return found


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def tsc() -> Path:
    """The TypeScript compiler pinned in js/package.json, installed once into the cache."""
    npm = tool("npm")
    version = PACKAGE["devDependencies"]["typescript"]
    prefix = CACHE / f"typescript-{version}"
    compiler = prefix / "node_modules" / "typescript" / "bin" / "tsc"
    if not compiler.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        flags = ["--no-save", "--no-audit", "--no-fund", "--ignore-scripts"]
        installed = subprocess.run(
            [npm, "install", "--prefix", str(prefix), *flags, f"typescript@{version}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0:
            missing(f"npm could not install typescript@{version}: {installed.stderr[-500:]}")
    manifest = json.loads((compiler.parents[1] / "package.json").read_text())
    assert manifest["version"] == version
    return compiler


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    """``npm pack`` of js/: its report, and the tarball unpacked in a project's node_modules."""
    npm = tool("npm")
    out = tmp_path_factory.mktemp("pack")
    [report] = json.loads(run(npm, "pack", "--json", "--pack-destination", out, cwd=JS))
    project = out / "project"
    modules = project / "node_modules"
    modules.mkdir(parents=True)
    with tarfile.open(out / report["filename"]) as tarball:
        tarball.extractall(modules, filter="data")
    (modules / "package").rename(modules / PACKAGE["name"])
    (project / "package.json").write_text('{"private": true, "type": "module"}\n')
    for name in ("example.ts", "tsconfig.json"):
        shutil.copy(JS / "types-check" / name, project / name)
    return report, project


def test_the_npm_package_has_the_python_package_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert PACKAGE["version"] == pyproject["project"]["version"]


def test_npm_pack_ships_the_module_and_its_types_only(
    packed: tuple[dict[str, object], Path], server: RunningServer
) -> None:
    report, project = packed
    files = report["files"]
    assert isinstance(files, list)
    assert sorted(entry["path"] for entry in files) == SHIPPED
    unpacked = project / "node_modules" / PACKAGE["name"]
    manifest = json.loads((unpacked / "package.json").read_text())
    assert manifest["version"] == PACKAGE["version"]
    assert "private" not in manifest
    assert not INSTALL_SCRIPTS & set(manifest.get("scripts", {}))
    assert manifest["type"] == "module"
    assert manifest["exports"]["."] == {"types": "./tidings.d.ts", "import": "./tidings.js"}
    # the file in the tarball is the one the server sends at /tidings.js
    served = httpx.get(server.url + "/tidings.js")
    assert served.status_code == 200
    assert served.content == (unpacked / "tidings.js").read_bytes()


def test_the_packed_module_imports_by_its_name(packed: tuple[dict[str, object], Path]) -> None:
    _, project = packed
    script = f"import * as m from {PACKAGE['name']!r}; console.log(Object.keys(m).sort().join())"
    output = run(tool("node"), "--input-type=module", "-e", script, cwd=project)
    assert output.strip() == "Tidings,TidingsError"


@pytest.mark.parametrize(("module", "resolution"), RESOLUTIONS)
def test_tsc_checks_the_typed_example_against_the_packed_declarations(
    packed: tuple[dict[str, object], Path], tsc: Path, module: str, resolution: str
) -> None:
    _, project = packed
    run(tool("node"), tsc, "-p", ".", "--module", module, "--moduleResolution", resolution,
        cwd=project)  # fmt: skip


def test_tsc_refuses_declarations_that_lost_a_type(
    packed: tuple[dict[str, object], Path], tsc: Path, tmp_path: Path
) -> None:
    # The example's @ts-expect-error lines are what make it able to fail: a looser type (here
    # any channel) must break the check.
    _, project = packed
    loose = tmp_path / "project"
    shutil.copytree(project, loose)
    declarations = loose / "node_modules" / PACKAGE["name"] / "tidings.d.ts"
    text = declarations.read_text()
    assert "(channel: string, options?: SubscribeOptions<Data>)" in text
    declarations.write_text(text.replace("(channel: string, options?", "(channel: any, options?"))
    result = subprocess.run(
        [tool("node"), str(tsc), "-p", "."], cwd=loose, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "Unused '@ts-expect-error' directive" in result.stdout


def test_the_declarations_name_every_public_member() -> None:
    script = (
        "import * as m from './tidings.js';"
        "const own = (o) => Object.getOwnPropertyNames(o).filter((n) => !/^_|^constr/.test(n));"
        "const members = own(m.Tidings.prototype);"
        "console.log(JSON.stringify({ exports: Object.keys(m), members }))"
    )
    public = json.loads(run(tool("node"), "--input-type=module", "-e", script, cwd=JS))
    declarations = (JS / "tidings.d.ts").read_text()
    for name in public["exports"]:
        assert re.search(rf"export declare class {name}\b", declarations), name
    tidings = declarations[declarations.index("export declare class Tidings ") :]
    assert public["members"], public
    for name in public["members"]:
        assert re.search(rf"^  (readonly )?{name}\b", tidings, re.M), name
