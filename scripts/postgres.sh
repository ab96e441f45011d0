#!/usr/bin/env bash
# Installs (Debian), starts and prepares a local PostgreSQL for the ad store's tests, then exports
# STARLING_TEST_POSTGRES. Sourced by .ci/run; run it by hand to test against PostgreSQL locally.
# Each run empties the test database, so tests start from a fresh schema.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing postgresql (Debian)"
    apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends postgresql >/dev/null; }
  else
    echo "postgres: pg_ctlcluster missing; install Debian's postgresql (as root: apt-get install postgresql)" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  pg_ctlcluster "$version" main start
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
as_postgres "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname = 'starling'\" | grep -q 1 \
  || psql -q -p $port -c \"CREATE ROLE starling LOGIN PASSWORD 'starling'\""
as_postgres "dropdb -p $port --if-exists starling_test && createdb -p $port -O starling starling_test"
export STARLING_TEST_POSTGRES="postgres://starling:starling@127.0.0.1:$port/starling_test"
echo "postgres: $version on port $port; STARLING_TEST_POSTGRES set"
