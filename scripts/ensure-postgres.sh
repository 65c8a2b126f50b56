#!/usr/bin/env bash
# The tests start their own PostgreSQL server; this makes sure its binaries are installed.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing PostgreSQL for the tests (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "PostgreSQL server binaries (initdb, pg_ctl) are needed for the tests." >&2
echo "Install the 'postgresql' package, or set IMAGEGATE_TEST_PG_BINDIR to their folder." >&2
exit 1
