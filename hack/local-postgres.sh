#!/usr/bin/env bash
# A local PostgreSQL for running workers by hand and for the demo, listening
# on loopback only. Its cluster lives under ~/.cache/workerpool-operator, or,
# as root, under /var/tmp (the server runs as the postgres user, which cannot
# enter /root).
#
#   hack/local-postgres.sh start   # init if needed, start; prints the URL
#   hack/local-postgres.sh url     # print DATABASE_URL
#   hack/local-postgres.sh stop
#   hack/local-postgres.sh destroy # stop and remove its data
#
# PG_PORT (default 54329) and PG_LISTEN (default 127.0.0.1) change where it listens;
# PG_ALLOW (space-separated CIDRs, e.g. the local cluster's pod network) lets
# those clients in without a password (the server listens only on addresses
# private to this machine). PG_DIR moves its data (e.g. one for the e2e suite).
set -euo pipefail
if [ "$(id -u)" = 0 ]; then pgdir=${PG_DIR:-/var/tmp/workerpool-operator-postgres}; else pgdir=${PG_DIR:-$HOME/.cache/workerpool-operator/postgres}; fi
data=$pgdir/data
sock=$pgdir/run
port=${PG_PORT:-54329}
listen=${PG_LISTEN:-127.0.0.1}
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$bindir/postgres" ] || { echo "PostgreSQL server binaries not found: run 'make test-deps' (installs postgresql-15)" >&2; exit 1; }

# The server refuses to run as root: run it as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
url() { echo "postgres://postgres@$listen:$port/tasker?sslmode=disable"; }

case "${1:-}" in
start)
  mkdir -p "$pgdir" "$sock"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$pgdir"; fi
  if [ ! -s "$data/PG_VERSION" ]; then
    as_pg "$bindir/initdb" -D "$data" -A trust -E UTF8 --locale=C -U postgres >/dev/null
  fi
  for cidr in ${PG_ALLOW:-}; do
    grep -q "^host all all $cidr trust" "$data/pg_hba.conf" ||
      echo "host all all $cidr trust" | as_pg tee -a "$data/pg_hba.conf" >/dev/null
  done
  if ! as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$bindir/pg_ctl" -D "$data" -l "$pgdir/server.log" -w -t 60 \
      -o "-c listen_addresses=$listen -c port=$port -c unix_socket_directories=$sock -c max_connections=200" start >/dev/null
  fi
  as_pg "$bindir/psql" -h "$sock" -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='tasker'" | grep -q 1 ||
    as_pg "$bindir/createdb" -h "$sock" -p "$port" -U postgres tasker
  url
  ;;
url) url ;;
stop)
  if [ -s "$data/PG_VERSION" ]; then as_pg "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true; fi
  ;;
destroy)
  "$0" stop
  rm -rf "$pgdir"
  ;;
*) echo "usage: $0 start|url|stop|destroy" >&2; exit 2 ;;
esac
