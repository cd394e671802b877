#!/usr/bin/env bash
# Install what the fan-out benchmark needs besides Python 3.11 and Node.js 18+: nginx with the
# Nchan module (the peer we compare against). The load generator (loadgen.js) has no npm
# dependencies. Run as root (apt-get).
set -euo pipefail
if ! dpkg -s nginx-light libnginx-mod-nchan >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light libnginx-mod-nchan
fi
# Debian may start nginx as a service on install; the benchmark runs its own instances only.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl disable --now nginx || true
fi
command -v node >/dev/null || { echo "Node.js 18+ is required (node not found)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
echo "nginx: $(nginx -v 2>&1)"
echo "nchan module: $(dpkg -L libnginx-mod-nchan | grep -E 'ngx_nchan_module\.so$' | head -1)"
echo "node: $(node --version)"
