# Throwaway PostgreSQL clusters for tests and benchmarks: each has its own data
# directory in /tmp, listens on 127.0.0.1 only, trusts local connections and
# loads pg_stat_statements (tests check what reached the server). Works whether
# or not a system PostgreSQL already runs. Sourced by scripts/test.
#
#   start_throwaway_postgres PORT   sets PG_PORT and PG_ROOT; PG_ROOT/ctl start|stop
#                                   restarts the cluster with the same settings
#   stop_throwaway_postgres         stops and deletes every cluster started here

PG_ROOTS=()

start_throwaway_postgres() {
  local port="$1"
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  PG_ROOT="$(mktemp -d /tmp/agora-pg.XXXXXX)"
  PG_PORT="$port"
  local as_pg=""
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: run the cluster as the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_ROOT"
    as_pg="runuser -u postgres --"
    # initdb sends its probes to /dev/null as that user. A root process that
    # once treated /dev/null as a file (chmod 600 by a history writer, say)
    # leaves it unwritable for everyone else: restore the device's usual mode.
    if ! $as_pg sh -c ': >/dev/null' 2>/dev/null; then
      echo "postgres cannot write /dev/null ($(ls -l /dev/null))" >&2
      if [ -c /dev/null ] && [ "$(stat -c %t:%T /dev/null)" = "1:3" ]; then
        chmod 666 /dev/null && echo "restored /dev/null to mode 666" >&2
      else
        return 1
      fi
    fi
  fi
  local options="-p $PG_PORT -k $PG_ROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
  options="$options -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c max_connections=200"
  cat > "$PG_ROOT/ctl" <<CTL
#!/bin/sh
case "\$1" in
  start) exec $as_pg "$bin/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -t 60 start -o "$options" >/dev/null ;;
  stop) exec $as_pg "$bin/pg_ctl" -D "$PG_ROOT/data" -m fast -w stop >/dev/null ;;
  kill) exec $as_pg "$bin/pg_ctl" -D "$PG_ROOT/data" -m immediate stop >/dev/null ;;
esac
CTL
  chmod 755 "$PG_ROOT/ctl"
  $as_pg "$bin/initdb" -D "$PG_ROOT/data" -A trust -U postgres --no-sync >"$PG_ROOT/initdb.log" 2>&1 \
    || { cat "$PG_ROOT/initdb.log"; return 1; }
  "$PG_ROOT/ctl" start || { cat "$PG_ROOT/server.log"; return 1; }
  PG_ROOTS+=("$PG_ROOT")
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (data in $PG_ROOT)"
}

stop_throwaway_postgres() {
  local root
  for root in "${PG_ROOTS[@]:-}"; do
    [ -n "$root" ] && [ -x "$root/ctl" ] && "$root/ctl" kill 2>/dev/null
    [ -n "$root" ] && rm -rf "$root"
  done
  PG_ROOTS=()
}
