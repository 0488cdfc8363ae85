#!/usr/bin/env bash
# The one command that runs Lessor's tests on a fresh machine: starts PostgreSQL and MariaDB (and
# makes PostgreSQL check passwords for non-admin logins), prepares the Python client used by the
# Vault-compatibility test (hvac in .venv), then runs every test of the workspace, and at the end
# checks that no database user or database the tests made is left behind (scripts/leftovers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/services.sh

if ! .venv/bin/python -c 'import hvac' >/dev/null 2>&1; then
  echo "test: installing hvac into .venv" >&2
  python3 -m venv .venv || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .venv; }
  .venv/bin/pip install --quiet --disable-pip-version-check 'hvac>=2,<3'
fi

snapshot=$(mktemp)
trap 'rm -f "$snapshot"' EXIT
./scripts/leftovers.sh snapshot "$snapshot"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi
./scripts/leftovers.sh check "$snapshot" || status=1
exit "$status"
