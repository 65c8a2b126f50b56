#!/usr/bin/env bash
# The tests start their own PostgreSQL server, drive Debian's Chromium and run the openai-image-gen clients'
# documented shell calls (curl, jq); this makes sure all of them are installed.
set -euo pipefail

missing=()
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql)
fi
if [ -z "${IMAGEGATE_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing for the tests with apt-get: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "The tests need these packages: ${missing[*]}." >&2
echo "Install them (or set IMAGEGATE_TEST_PG_BINDIR / IMAGEGATE_TEST_CHROMIUM to existing ones)." >&2
exit 1
