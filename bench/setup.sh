#!/usr/bin/env bash
# Install what the fan-out benchmark needs: nginx with the Nchan module (the peer we
# compare against) and the Node.js load generator's one dependency (ws).
set -euo pipefail
cd "$(dirname "$0")"
if ! dpkg -s nginx-light libnginx-mod-nchan >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-nchan
fi
# Debian starts nginx as a service on install; the benchmark runs its own instances only.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
command -v node >/dev/null || { echo "Node.js 18+ is required (node not found)" >&2; exit 1; }
npm install --no-audit --no-fund
echo "nchan module: $(dpkg -L libnginx-mod-nchan | grep -E 'ngx_nchan_module\.so$' | head -1)"
