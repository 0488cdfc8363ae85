#!/usr/bin/env bash
# Starts the databases Lessor's tests and `lessor dev` talk to: PostgreSQL and MariaDB on this
# machine, installing them from Debian's packages when absent. Idempotent: safe to run again.
#
# PostgreSQL here trusts every local connection, so a wrong password would still log in and a test
# of revocation or rotation would prove nothing. This script therefore puts password rules
# (scram-sha-256) for TCP logins ahead of the trust rule, keeping trust for the admin roles only.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

need_install=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_install+=(postgresql postgresql-client)
[ -x /usr/sbin/mariadbd ] || need_install+=(mariadb-server mariadb-client)
# The identity tests make their signing keys with the openssl command-line tool.
command -v openssl >/dev/null 2>&1 || need_install+=(openssl)
if [ ${#need_install[@]} -gt 0 ]; then
  log "installing ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

# --- PostgreSQL -------------------------------------------------------------
pg_version=$(ls /etc/postgresql | sort -V | tail -n1)
pg_hba=/etc/postgresql/$pg_version/main/pg_hba.conf
if ! grep -q '# lessor: BEGIN' "$pg_hba"; then
  log "adding password rules for non-admin TCP logins to $pg_hba"
  tmp=$(mktemp)
  {
    echo '# lessor: BEGIN (scripts/services.sh) - admins keep trust, every other TCP login needs its password'
    echo 'host    all    postgres    127.0.0.1/32    trust'
    echo 'host    all    root        127.0.0.1/32    trust'
    echo 'host    all    all         127.0.0.1/32    scram-sha-256'
    echo '# lessor: END'
    cat "$pg_hba"
  } >"$tmp"
  cat "$tmp" >"$pg_hba"
  rm -f "$tmp"
  hba_changed=1
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL $pg_version"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start || true
elif [ "${hba_changed:-0}" = 1 ]; then
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
fi

# --- MariaDB ----------------------------------------------------------------
if ! mariadb-admin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1; then
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi

# A fresh Debian MariaDB lets root in only through the Unix socket; the tests and `lessor dev`
# log in over TCP as root without a password, as on the machines this project runs on.
for _ in $(seq 1 30); do
  mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1 && break
  sleep 1
done
if ! mariadb -uroot -h127.0.0.1 --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1; then
  log "allowing root@127.0.0.1 without a password in MariaDB"
  mariadb -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" || true
fi

# --- wait until both answer ---------------------------------------------------
for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p 5432 && mariadb-admin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1; then
    log "PostgreSQL and MariaDB are up"
    exit 0
  fi
  sleep 1
done
log "PostgreSQL or MariaDB did not come up within 60 s"
exit 1
