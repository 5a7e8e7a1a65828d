#!/usr/bin/env bash
# A throwaway PostgreSQL for the replica tests and benchmarks: `scripts/postgres.sh CMD ARGS…`
#
# Installs Debian's `postgresql` when its server binaries are missing, then starts a cluster in
# a fresh temporary directory — as the unprivileged `postgres` user when run as root (the
# server refuses to run as root), listening on loopback only, on a free port, `trust` auth
# (a test cluster reachable only from this machine, gone at exit) — runs CMD with
#   FLEETGATE_TEST_PG      postgres://postgres@127.0.0.1:PORT  (append /DBNAME)
#   FLEETGATE_TEST_PG_CTL  the pg_ctl command for this cluster (the suites restart it)
# and stops the cluster and removes its directory when CMD ends, whatever its outcome.
set -euo pipefail
say() { printf '\033[1mpostgres:\033[0m %s\n' "$*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  say "installing Debian's postgresql"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  bin=$(find_bin)
fi

as=()
owner=$(id -un)
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  as=(runuser -u postgres --)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-pg.XXXXXX")
chown "$owner" "$dir"
chmod 700 "$dir"
ctl=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log")
cleanup() {
  "${ctl[@]}" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 30000))
  if "${ctl[@]}" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c shared_buffers=128MB" \
    start >/dev/null 2>&1; then
    break
  fi
  [ "$attempt" = 5 ] && { cat "$dir/server.log" >&2; say "could not start"; exit 1; }
done
say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"

export FLEETGATE_TEST_PG="postgres://postgres@127.0.0.1:$port"
export FLEETGATE_TEST_PG_CTL="${ctl[*]}"
"$@"
