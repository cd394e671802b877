#!/usr/bin/env bash
# Install what the benchmarks need besides Python 3.11 and Node.js 18+: nginx with the Nchan
# module (the peer we compare against), wrk (shortpoll.py, publish.py), and for the uvicorn
# targets the project's .venv (scripts/env.sh: the package, uvicorn, FastAPI) plus
# bench/requirements.txt (the Python peers: sse-starlette, broadcaster, python-socketio, Django
# Channels; not dependencies of Tidings). The load generator (loadgen.js) has no npm
# dependencies. Run as root (apt-get).
set -euo pipefail
if ! dpkg -s nginx-light libnginx-mod-nchan wrk >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light libnginx-mod-nchan wrk
fi
# Debian may start nginx as a service on install; the benchmark runs its own instances only.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl disable --now nginx || true
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/env.sh
source "$ROOT/scripts/env.sh"
"$ROOT/.venv/bin/python" -m pip install --quiet -r "$ROOT/bench/requirements.txt"
command -v node >/dev/null || { echo "Node.js 18+ is required (node not found)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
echo "nginx: $(nginx -v 2>&1)"
echo "nchan module: $(dpkg -L libnginx-mod-nchan | grep -E 'ngx_nchan_module\.so$' | head -1)"
echo "node: $(node --version)"
echo "bench Python packages: $("$ROOT/.venv/bin/python" -m pip list 2>/dev/null \
    | grep -iE '^(uvicorn|fastapi|sse-starlette|broadcaster|python-socketio|channels|django) ' \
    | tr -s ' ' | paste -sd, -)"
echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
