# shellcheck shell=bash
# PostgreSQL for the Iceberg SQL catalog a shared deployment uses: Debian's postgresql
# package (installed by scripts/bootstrap), run as a cluster of K2's own under
# $K2_SERVICES_DIR/postgres — never the system's cluster or its service.
#
# Port: $K2_POSTGRES_PORT (5432), on 127.0.0.1 only; the socket stays in the data dir.
# Role k2, password k2-password (local only), database k2; tests create databases of
# their own beside it. K2's catalog URI: postgres://k2:k2-password@127.0.0.1:<port>/k2
# PostgreSQL refuses to run as root: when this script runs as root the server runs as
# the package's `postgres` user, which then owns the data dir.

POSTGRES_HOST=127.0.0.1
POSTGRES_PORT="${K2_POSTGRES_PORT:-5432}"
POSTGRES_DIR="$K2_SERVICES_DIR/postgres"
POSTGRES_USER=k2
POSTGRES_PASSWORD=k2-password
POSTGRES_DB=k2

postgres_bin() {
  local dirs dir
  dirs=(/usr/lib/postgresql/*/bin)
  [[ -d ${dirs[0]} ]] || return 1
  dir=$(printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1)
  printf '%s/%s\n' "$dir" "$1"
}

# as_postgres CMD...: runs CMD as the server's owner.
as_postgres() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_install() {
  postgres_bin initdb >/dev/null && return 0
  log "installing Debian's postgresql"
  (apt-get install -y -qq postgresql >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }) \
    || die "apt-get install postgresql failed"
}

postgres_start() {
  local data="$POSTGRES_DIR/data"
  already_up postgres "$POSTGRES_HOST" "$POSTGRES_PORT" "$data/postmaster.pid" && return 0
  mkdir -p "$POSTGRES_DIR"
  [[ $(id -u) == 0 ]] && chown postgres: "$POSTGRES_DIR"
  if [[ ! -f $data/PG_VERSION ]]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >"$POSTGRES_DIR/pwfile"
    [[ $(id -u) == 0 ]] && chown postgres: "$POSTGRES_DIR/pwfile"
    as_postgres "$(postgres_bin initdb)" -D "$data" -U "$POSTGRES_USER" \
      --pwfile="$POSTGRES_DIR/pwfile" --auth-host=scram-sha-256 --auth-local=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$POSTGRES_DIR/initdb.log" 2>&1 \
      || die "postgres: initdb failed (see $POSTGRES_DIR/initdb.log)"
    rm -f "$POSTGRES_DIR/pwfile"
  fi
  # After a kill -9 the old server and its backends take a moment to go; until they have,
  # PostgreSQL refuses the data dir (its lock file or shared memory is still in use).
  local attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    as_postgres "$(postgres_bin pg_ctl)" -D "$data" -l "$POSTGRES_DIR/postgres.log" -w -t 60 \
      -o "-c listen_addresses=$POSTGRES_HOST -p $POSTGRES_PORT -k $data" start >/dev/null 2>&1 && break
    (( attempt < 10 )) || die "postgres did not start on $POSTGRES_HOST:$POSTGRES_PORT (see $POSTGRES_DIR/postgres.log)"
    sleep 1
  done
  if ! postgres_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'" | grep -q 1; then
    postgres_psql -d postgres -c "CREATE DATABASE $POSTGRES_DB" >/dev/null \
      || die "postgres: creating database $POSTGRES_DB failed"
  fi
}

# postgres_running: the server of this services dir is up.
postgres_running() {
  pid_alive "$POSTGRES_DIR/data/postmaster.pid"
}

postgres_stop() {
  postgres_running || return 0
  as_postgres "$(postgres_bin pg_ctl)" -D "$POSTGRES_DIR/data" -m fast -w -t 30 stop >/dev/null \
    || log "postgres did not stop cleanly"
}

postgres_status() {
  local health=down
  postgres_running && tcp_open "$POSTGRES_HOST" "$POSTGRES_PORT" && health=up
  printf '%-8s %-22s %s\n' postgres "$POSTGRES_HOST:$POSTGRES_PORT" "$health"
  [[ $health == up ]]
}

# postgres_psql ARGS...: psql as K2's role over TCP.
postgres_psql() {
  PGPASSWORD=$POSTGRES_PASSWORD "$(postgres_bin psql)" -X -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" \
    -U "$POSTGRES_USER" -v ON_ERROR_STOP=1 "$@"
}
