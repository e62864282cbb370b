#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb into a new temporary directory, the server
# on 127.0.0.1 at a free port (and a unix socket in that directory), no system service.
#
#   eval "$(tools/pg-test-cluster.sh start)"    exports FLOWD_PG_DIR and FLOWD_TEST_POSTGRES_URL
#                                                (role flowd_password_check, password right-password,
#                                                must log in with its password)
#   tools/pg-test-cluster.sh stop "$FLOWD_PG_DIR"    stops the server and removes the directory
#   tools/pg-test-cluster.sh pause DIR          stops the server, keeping its data (an outage)
#   tools/pg-test-cluster.sh resume DIR         starts it again on the same port
#
# As root the server runs as the `postgres` user (Debian's package creates it) or `nobody`:
# PostgreSQL refuses to run as root. fsync is off: the data is thrown away afterwards
# (FLOWD_PG_DURABLE=1 keeps PostgreSQL's durable defaults, for benchmarks).
set -euo pipefail

pg_bin() {
  if [ -n "${PGBIN:-}" ]; then echo "$PGBIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || { echo "pg-test-cluster: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }
  echo "$dir"
}

case "${1:-}" in
start)
  bin=$(pg_bin)
  # A short path: the socket path must fit in 107 bytes.
  dir=$(mktemp -d "${TMPDIR:-/tmp}/flowd-pg.XXXXXX")
  as=()
  if [ "$(id -u)" = 0 ]; then
    owner=postgres
    getent passwd postgres >/dev/null || owner=nobody
    chown "$owner" "$dir"
    as=(runuser -u "$owner" --)
  fi
  if ! "${as[@]}" "$bin/initdb" -D "$dir/data" -U flowd --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1
  fi
  # Trust on loopback, except for one role that must log in with a password (the tests check
  # that a wrong password is reported as such).
  cat >"$dir/data/pg_hba.conf" <<'HBA'
local all all trust
host all flowd_password_check 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
HBA
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${FLOWD_PG_DURABLE:-0}" = 1 ] && durability=""
  echo "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 $durability" \
    >"$dir/options"
  if ! "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$(cat "$dir/options")" start >/dev/null; then
    cat "$dir/server.log" >&2; rm -rf "$dir"; exit 1
  fi
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U flowd flowd_test
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U flowd -d flowd_test \
    -c "CREATE ROLE flowd_password_check LOGIN PASSWORD 'right-password'" >/dev/null
  echo "export FLOWD_PG_DIR=$dir FLOWD_TEST_POSTGRES_URL=postgres://flowd@127.0.0.1:$port/flowd_test"
  ;;
stop)
  dir=${2:?usage: $0 stop DIR}
  [ -d "$dir" ] || exit 0
  bin=$(pg_bin)
  as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u "$(stat -c %U "$dir")" --)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
pause|resume)
  dir=${2:?usage: $0 $1 DIR}
  bin=$(pg_bin)
  as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u "$(stat -c %U "$dir")" --)
  [ -f "$dir/options" ] || { echo "pg-test-cluster: $dir was not started by this script" >&2; exit 1; }
  if [ "$1" = pause ]; then
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  else
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$(cat "$dir/options")" start >/dev/null
  fi
  ;;
*)
  echo "usage: $0 start | stop DIR | pause DIR | resume DIR" >&2
  exit 2
  ;;
esac
