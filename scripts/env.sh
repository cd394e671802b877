# Sourced by scripts/serve and scripts/test: make .venv with the package and what the caller
# needs. TIDINGS_INSTALL=serve installs the package and its runtime dependencies only; the
# default (test) adds the test tools. Both share one .venv: the test install is a superset of
# the serve one, so serving from a venv the tests set up needs no second install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Tidings needs Python 3.11 or newer; $PY is $("$PY" --version 2>&1)" >&2
  exit 1
fi
case "${TIDINGS_INSTALL:-test}" in
  serve) wanted=(serve test); target="$ROOT" ;;
  test) wanted=(test); target="$ROOT[test]" ;;
  *) echo "TIDINGS_INSTALL must be serve or test, not ${TIDINGS_INSTALL}" >&2; exit 1 ;;
esac
# The modules on every request's path (setup.py) are compiled with mypyc where a C compiler
# and Python's headers are present: TIDINGS_COMPILE=0 keeps them interpreted, =1 insists.
compile="${TIDINGS_COMPILE:-auto}"
if [ "$compile" = auto ]; then
  if command -v cc >/dev/null 2>&1 && "$PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    compile=1
  else
    compile=0
    echo "note: no C compiler or no Python headers here: Tidings runs interpreted, slower" \
      "(docs/production.md, \"Compiled modules\")" >&2
  fi
fi
case "$compile" in
  0) sources="" ;;
  1) sources="$(find "$ROOT/src" \( -name '*.py' -o -name '*.c' \) -print0 | sort -z \
       | xargs -0 cat | sha1sum)" ;;
  *) echo "TIDINGS_COMPILE must be 0 or 1, not ${compile}" >&2; exit 1 ;;
esac
# a compiled build is redone when any source changes: an extension runs the code it was built from
digest="$({ cat "$ROOT/pyproject.toml" "$ROOT/setup.py"; echo "$compile $sources"; } \
  | sha1sum | cut -c1-12)"
installed=""
for kind in "${wanted[@]}"; do
  [ -f "$VENV/.installed-$digest-$kind" ] && installed="$kind"
done
if [ -z "$installed" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  find "$ROOT/src" -name '*.so' -delete  # extensions of an earlier build
  "$VENV/bin/python" -m pip install --quiet -e "$target"
  if [ "$compile" = 1 ]; then
    # mypyc type-checks the sources against the dependencies just installed
    echo "== compiling the request path with mypyc (about a minute)" >&2
    "$VENV/bin/python" -m pip install --quiet "setuptools>=77" "mypy>=1.10"
    TIDINGS_COMPILE=1 "$VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps \
      -e "$target"
  fi
  rm -f "$VENV"/.installed-*
  touch "$VENV/.installed-$digest-${TIDINGS_INSTALL:-test}"
fi
