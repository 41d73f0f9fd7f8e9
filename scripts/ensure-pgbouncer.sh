#!/usr/bin/env bash
# Make sure the pgbouncer program is installed: tests/operations and the pgbouncer benchmark
# start a throwaway PgBouncer of their own (agentledger.testing_pgbouncer); none runs as a
# service. Installs the Debian package when it is missing.
set -euo pipefail
if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing pgbouncer (Debian package)..." >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq pgbouncer >/dev/null
    exit 0
fi
echo "pgbouncer is not installed and apt-get is not available: install PgBouncer (1.18 or" >&2
echo "later) so that the pgbouncer program is on PATH, then run 'make test' again." >&2
exit 1
