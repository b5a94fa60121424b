#!/usr/bin/env bash
# Make PostgreSQL server binaries available for the tests (issue 7: a real server, no stand-in).
#
# The tests start their own throwaway cluster (tests/pg_fixtures.py): initdb in a temp dir, a
# real password, 127.0.0.1 on a free port, torn down at exit. This script only makes sure the
# binaries are there, installing Debian's postgresql package when they are not, and prints the
# folder that holds them. As root, the server runs as the 'postgres' OS user the package creates.
set -euo pipefail

find_bin_dir() {
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n | tail -n 1 || true)
    if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then
        echo "$newest"
        return 0
    fi
    return 1
}

if ! bin_dir=$(find_bin_dir); then
    echo "PostgreSQL server not found: installing Debian's postgresql package" >&2
    # The tests make their own clusters: don't let the package create and start a 'main' one.
    mkdir -p /etc/postgresql-common
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql >&2
    bin_dir=$(find_bin_dir) || { echo "postgresql installed but initdb not found" >&2; exit 1; }
fi

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "running as root but there is no 'postgres' OS user to run the server as" >&2
    exit 1
fi

"$bin_dir/postgres" --version >&2
echo "$bin_dir"
