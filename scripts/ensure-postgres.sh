#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 before the tests run.
# Starts the local Debian cluster when it is installed but down; otherwise explains what to do.
set -euo pipefail
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
    exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "starting PostgreSQL $version (cluster main)..." >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do
        pg_isready -q -h "$host" -p "$port" && exit 0
        sleep 1
    done
fi
echo "PostgreSQL is not reachable on $host:$port. Start a server (trust auth for user postgres)" >&2
echo "or point AGENTLEDGER_TEST_PG_URL at one, then run 'make test' again." >&2
exit 1
