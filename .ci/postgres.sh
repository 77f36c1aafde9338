#!/usr/bin/env bash
# Start a throw-away PostgreSQL cluster on 127.0.0.1 for tests/test_clinic.py; print its URL.
# Usage: eval "$(.ci/postgres.sh start)"  ... then  .ci/postgres.sh stop "$KULIT_PG_DIR"
# Installs Debian's postgresql when missing. As root, the server runs as the postgres user
# (initdb refuses root).
set -euo pipefail
cmd=${1:-start}
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$cmd" = stop ]; then
  dir=${2:?data folder}
  [ -d "$dir" ] || exit 0
  as_owner "$(pgbin)/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

if [ -z "$(pgbin)" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2
fi
BIN=$(pgbin)
dir=$(mktemp -d /tmp/kulit-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >/dev/null
echo "export KULIT_PG_DIR=$dir"
echo "export KULIT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres"
