# A throwaway PostgreSQL cluster for tests and benchmarks: its own data directory
# in /tmp, listening on 127.0.0.1 only, trust authentication, pg_stat_statements
# loaded (tests check what reached the server). Works whether or not a system
# PostgreSQL already runs. Sourced by scripts/test.

start_throwaway_postgres() {
  local port="$1"
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  PG_ROOT="$(mktemp -d /tmp/agora-pg.XXXXXX)"
  PG_PORT="$port"
  local as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: run the cluster as the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_ROOT"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$PG_BIN/initdb" -D "$PG_ROOT/data" -A trust -U postgres --no-sync >"$PG_ROOT/initdb.log" 2>&1 \
    || { cat "$PG_ROOT/initdb.log"; return 1; }
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -t 60 start -o \
    "-p $PG_PORT -k $PG_ROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
     -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c max_connections=200" \
    >/dev/null || { cat "$PG_ROOT/server.log"; return 1; }
  PG_AS=("${as_pg[@]}")
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (data in $PG_ROOT)"
}

stop_throwaway_postgres() {
  if [ -n "${PG_ROOT:-}" ] && [ -d "$PG_ROOT/data" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_ROOT"
  fi
}
