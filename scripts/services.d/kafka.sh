# Kafka-protocol broker: Tansu (Apache-2.0, crates.io) with its SQLite storage engine.
# The memory engine of 0.6.0 returns wrong data on mid-batch fetches; SQLite is correct
# and keeps data and committed offsets across restarts.

TANSU_VERSION=0.6.0
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${K2_KAFKA_PORT:-9092}"
TANSU_ROOT="$K2_CACHE/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
KAFKA_DIR="$K2_SERVICES_DIR/kafka"

kafka_install() {
  [[ -x $TANSU_BIN ]] && return 0
  log "building tansu $TANSU_VERSION into $TANSU_ROOT (once per machine, ~15 CPU-minutes)"
  mkdir -p "$TANSU_ROOT"
  # A private target dir so a half-finished build resumes and does not touch K2's target.
  CARGO_TARGET_DIR="$K2_CACHE/tansu-build" cargo install "tansu@$TANSU_VERSION" --locked \
    --no-default-features --features libsql --root "$TANSU_ROOT" \
    || die "cargo install tansu failed"
  rm -rf "$K2_CACHE/tansu-build"
}

kafka_start() {
  if tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    pid_alive "$KAFKA_DIR/pid" && return 0
    # Another K2 checkout on this machine started the same broker: share it (topics and
    # groups are namespaced by the tests; one broker per port is all the machine has).
    local other
    other=$(pgrep -f "tansu broker --listener-url tcp://$KAFKA_HOST:$KAFKA_PORT" | head -n 1 || true)
    if [[ -n $other ]]; then
      log "kafka: using the K2 broker already running on $KAFKA_HOST:$KAFKA_PORT (pid $other, $(readlink -f /proc/"$other"/cwd))"
      return 0
    fi
    die "port $KAFKA_HOST:$KAFKA_PORT is taken by a process K2 did not start"
  fi
  mkdir -p "$KAFKA_DIR"
  # tansu reads a .env in its working directory and resolves the sqlite path against it.
  (cd "$KAFKA_DIR" && exec setsid "$TANSU_BIN" broker \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --storage-engine sqlite://tansu.db --silent \
      >>"$KAFKA_DIR/broker.log" 2>&1 </dev/null) &
  echo $! >"$KAFKA_DIR/pid"
  wait_tcp "$KAFKA_HOST" "$KAFKA_PORT" 30 || die "tansu did not listen on $KAFKA_HOST:$KAFKA_PORT within 30 s (see $KAFKA_DIR/broker.log)"
}

kafka_stop() { stop_pidfile "$KAFKA_DIR/pid" tansu; }

kafka_status() {
  local health=down
  tcp_open "$KAFKA_HOST" "$KAFKA_PORT" && health=up
  printf '%-8s %-22s %s\n' kafka "$KAFKA_HOST:$KAFKA_PORT" "$health"
  [[ $health == up ]]
}
