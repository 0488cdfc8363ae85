#!/usr/bin/env bash
# The one command that runs Lessor's tests on a fresh machine: starts PostgreSQL, MariaDB and Redis (and
# makes PostgreSQL check passwords for non-admin logins), prepares the clients used by the
# Vault-compatibility tests (hvac and async-hvac in .venv, node-vault in tests/clients), then runs
# every test of the workspace, and at the end
# checks that no database user or database the tests made is left behind (scripts/leftovers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/services.sh

if ! .venv/bin/python -c 'import hvac, async_hvac, pytest' >/dev/null 2>&1; then
  echo "test: installing hvac, async-hvac and pytest into .venv" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .venv; }
  .venv/bin/pip install --quiet --disable-pip-version-check 'hvac>=2,<3' 'async-hvac==0.7.4' 'pytest>=8,<9'
fi
# node-vault, for tests/clients.rs (node and npm come with the machine, or from Debian).
if [ ! -d tests/clients/node_modules/node-vault ]; then
  echo "test: installing node-vault into tests/clients" >&2
  command -v npm >/dev/null 2>&1 || apt-get install -y -qq nodejs npm >/dev/null
  npm ci --prefix tests/clients --silent --no-audit --no-fund >/dev/null
fi

# Headless Chromium and its WebDriver, for the console's browser tests (tests/console.rs).
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  echo "test: installing chromium and chromium-driver" >&2
  apt-get install -y -qq chromium chromium-driver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
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
# nextest runs no doctests: lessor-client's documented examples must keep compiling.
cargo test --doc -p lessor-client || status=$?
./scripts/leftovers.sh check "$snapshot" || status=1
exit "$status"
