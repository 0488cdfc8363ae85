#!/usr/bin/env bash
# Starts the databases Lessor's tests and `lessor dev` talk to: PostgreSQL, MariaDB and Redis on
# this machine, installing them from Debian's packages when absent. Idempotent: safe to run again.
#
# PostgreSQL here trusts every local connection, so a wrong password would still log in and a test
# of revocation or rotation would prove nothing. This script therefore puts password rules
# (scram-sha-256) for TCP logins ahead of the trust rule, keeping trust for the admin roles only.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

need_install=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_install+=(postgresql postgresql-client)
[ -x /usr/sbin/mariadbd ] || need_install+=(mariadb-server mariadb-client)
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_install+=(redis-tools)
# The identity tests make their signing keys with the openssl command-line tool.
command -v openssl >/dev/null 2>&1 || need_install+=(openssl)
# The README's examples (run by tests/readme.rs) use curl and jq.
command -v curl >/dev/null 2>&1 || need_install+=(curl)
command -v jq >/dev/null 2>&1 || need_install+=(jq)
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

# The replica tests run several Lessor processes, each with a pool on its PostgreSQL store and
# one on its target, beside the rest of the suite: more than the default 100 connections.
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -AtXqc 'SHOW max_connections')" -lt 300 ]; then
  log "raising PostgreSQL max_connections to 300 (restarts it)"
  psql -h 127.0.0.1 -U postgres -d postgres -AtXqc "ALTER SYSTEM SET max_connections = 300" >/dev/null
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main restart
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
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

# --- Redis ------------------------------------------------------------------
# Kept in memory only (nothing to clean between runs); ACL users are what the tests make.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi

# --- TLS ----------------------------------------------------------------------
# A throwaway CA and certificates for 127.0.0.1 and localhost, in $tls_dir (LESSOR_TEST_TLS_DIR,
# default /etc/lessor-tests/tls), and TLS turned on in both databases with them. Plain connections
# keep working for every other test; users made members of the PostgreSQL group role
# lessor_tls_only can log in over TLS only, and members of lessor_tls_cert with a client
# certificate only (MariaDB users say REQUIRE SSL / REQUIRE X509 themselves).
tls_dir=${LESSOR_TEST_TLS_DIR:-/etc/lessor-tests/tls}
if [ ! -s "$tls_dir/server.pem" ] || ! openssl x509 -checkend 86400 -noout -in "$tls_dir/server.pem" >/dev/null 2>&1; then
  log "making a test CA and certificates in $tls_dir"
  mkdir -p "$tls_dir"
  chmod 0755 "$tls_dir"
  ext=$(mktemp)
  ( cd "$tls_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Lessor test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    # A second CA nobody trusts, for "unknown certificate" cases.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Lessor untrusted CA" \
      -keyout other-ca.key -out other-ca.pem 2>/dev/null
    issue() { # name, subject, extensions
      printf '%s\n' "$3" >"$ext"
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile "$ext" -out "$1.pem" 2>/dev/null
      rm -f "$1.csr"
    }
    issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    # A server certificate for another name, to show verify-full refusing it.
    issue wrong-name "/CN=wrong.example" "subjectAltName=DNS:wrong.example
extendedKeyUsage=serverAuth"
    # Client certificates: CN is the database user for PostgreSQL's cert authentication.
    issue client "/CN=lessor_tls_client" "extendedKeyUsage=clientAuth"
    chmod 0644 ./*.pem ./*.key
  )
  rm -f "$ext"
  tls_changed=1
fi

# PostgreSQL reads its copies as the postgres user; a reload applies TLS settings.
pg_conf_dir=/etc/postgresql/$pg_version/main
if [ "${tls_changed:-0}" = 1 ] || [ ! -s "$pg_conf_dir/lessor-server.key" ]; then
  install -o postgres -g postgres -m 0600 "$tls_dir/server.key" "$pg_conf_dir/lessor-server.key"
  install -o postgres -g postgres -m 0644 "$tls_dir/server.pem" "$pg_conf_dir/lessor-server.pem"
  install -o postgres -g postgres -m 0644 "$tls_dir/ca.pem" "$pg_conf_dir/lessor-ca.pem"
  psql -h 127.0.0.1 -U postgres -d postgres -qAtX \
    -c "ALTER SYSTEM SET ssl = on" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$pg_conf_dir/lessor-server.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$pg_conf_dir/lessor-server.key'" \
    -c "ALTER SYSTEM SET ssl_ca_file = '$pg_conf_dir/lessor-ca.pem'" \
    -c "SELECT pg_reload_conf()" >/dev/null
fi
psql -h 127.0.0.1 -U postgres -d postgres -qAtX -c "
  DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lessor_tls_only') THEN CREATE ROLE lessor_tls_only NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lessor_tls_cert') THEN CREATE ROLE lessor_tls_cert NOLOGIN; END IF;
  END \$\$" >/dev/null
if ! grep -q '# lessor-tls: BEGIN' "$pg_hba"; then
  log "adding TLS-only rules to $pg_hba"
  tmp=$(mktemp)
  {
    echo '# lessor-tls: BEGIN (scripts/services.sh) - members of these groups log in over TLS only'
    echo 'hostnossl all    +lessor_tls_only  127.0.0.1/32    reject'
    echo 'hostnossl all    +lessor_tls_cert  127.0.0.1/32    reject'
    echo 'hostssl   all    +lessor_tls_cert  127.0.0.1/32    cert'
    echo '# lessor-tls: END'
    cat "$pg_hba"
  } >"$tmp"
  cat "$tmp" >"$pg_hba"
  rm -f "$tmp"
  psql -h 127.0.0.1 -U postgres -d postgres -qAtX -c "SELECT pg_reload_conf()" >/dev/null
fi

# MariaDB reads TLS settings at start only: configure, then restart it once.
my_tls=/etc/mysql/lessor-tls.cnf
my_tls_dir=/etc/mysql/lessor-tls
if [ "${tls_changed:-0}" = 1 ] || [ ! -s "$my_tls_dir/server.key" ]; then
  install -d -o mysql -g mysql -m 0750 "$my_tls_dir"
  install -o mysql -g mysql -m 0600 "$tls_dir/server.key" "$my_tls_dir/server.key"
  install -o mysql -g mysql -m 0644 "$tls_dir/server.pem" "$my_tls_dir/server.pem"
  install -o mysql -g mysql -m 0644 "$tls_dir/ca.pem" "$my_tls_dir/ca.pem"
  printf '[mysqld]\nssl_cert = %s/server.pem\nssl_key = %s/server.key\nssl_ca = %s/ca.pem\n' \
    "$my_tls_dir" "$my_tls_dir" "$my_tls_dir" >"$my_tls"
fi
my_cnf=/etc/mysql/my.cnf
if ! grep -q "lessor-tls.cnf" "$my_cnf" 2>/dev/null; then
  printf '\n!include %s\n' "$my_tls" >>"$my_cnf"
fi
if [ "$(mariadb -uroot -h127.0.0.1 -N -B -e "SELECT @@have_ssl" 2>/dev/null)" != "YES" ]; then
  log "restarting MariaDB with TLS"
  # Waits for the old process to exit: a start while it is still shutting down would be a no-op.
  start-stop-daemon --stop --oknodo --retry 60 --exec /usr/sbin/mariadbd >/dev/null
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 30); do
    mariadb-admin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1 && break
    sleep 1
  done
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
