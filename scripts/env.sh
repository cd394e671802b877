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
digest="$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)"
installed=""
for kind in "${wanted[@]}"; do
  [ -f "$VENV/.installed-$digest-$kind" ] && installed="$kind"
done
if [ -z "$installed" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$target"
  rm -f "$VENV"/.installed-*
  touch "$VENV/.installed-$digest-${TIDINGS_INSTALL:-test}"
fi
