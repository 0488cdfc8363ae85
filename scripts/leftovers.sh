#!/usr/bin/env bash
# What the test suite must leave behind: nothing. `leftovers.sh snapshot FILE` records the
# database users and databases of the local PostgreSQL and MariaDB, and the ACL users of the
# local Redis; `leftovers.sh check FILE`
# lists those that appeared since, and fails if there are any. scripts/test.sh runs the first
# before the tests and the second after them, so a test that forgets to revoke or drop what it
# made fails the run (a user that outlives its test is exactly the defect Lessor exists to prevent).
set -euo pipefail

state() {
  psql -h 127.0.0.1 -U postgres -d postgres -AtXq \
    -c "SELECT 'postgres user ' || rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'" \
    -c "SELECT 'postgres database ' || datname FROM pg_database"
  mariadb -uroot -h127.0.0.1 -N -B \
    -e "SELECT CONCAT('mariadb user ', user, '@', host) FROM mysql.user;
        SELECT CONCAT('mariadb database ', schema_name) FROM information_schema.schemata"
  redis-cli -h 127.0.0.1 -p 6379 ACL USERS | sed 's/^/redis user /'
}

case "${1:-}" in
  snapshot)
    state | sort >"$2"
    ;;
  check)
    now=$(mktemp)
    state | sort >"$now"
    left=$(comm -13 "$2" "$now")
    rm -f "$now"
    if [ -n "$left" ]; then
      echo "leftovers: the tests left these behind:" >&2
      echo "$left" | sed 's/^/  /' >&2
      exit 1
    fi
    echo "leftovers: no database user or database left behind" >&2
    ;;
  *)
    echo "usage: $0 snapshot FILE | check FILE" >&2
    exit 2
    ;;
esac
