# shellcheck shell=bash
# Prometheus, from Debian's package unpacked into the cache by scripts/bootstrap (never
# installed as a system service), on 127.0.0.1 with K2's alert rules.
#
# Port: $K2_PROMETHEUS_PORT (9090). Configuration: $K2_PROMETHEUS_CONFIG, default
# config/prometheus/prometheus.yml (scrapes the sink at its default metrics address);
# a test points it at a file of its own (rule files are found relative to the
# configuration file, as Prometheus does).
# TSDB and log: $K2_SERVICES_DIR/prometheus.

PROMETHEUS_HOST=127.0.0.1
PROMETHEUS_PORT="${K2_PROMETHEUS_PORT:-9090}"
PROMETHEUS_CONFIG="${K2_PROMETHEUS_CONFIG:-$K2_ROOT/config/prometheus/prometheus.yml}"
PROMETHEUS_DIR="$K2_SERVICES_DIR/prometheus"
PROMETHEUS_BIN="$K2_CACHE/prometheus/usr/bin/prometheus"

prometheus_install() {
  [[ -x $PROMETHEUS_BIN ]] || "$K2_ROOT/scripts/bootstrap" >&2
  [[ -x $PROMETHEUS_BIN ]] || die "no $PROMETHEUS_BIN after scripts/bootstrap"
}

prometheus_start() {
  already_up prometheus "$PROMETHEUS_HOST" "$PROMETHEUS_PORT" "$PROMETHEUS_DIR/pid" && return 0
  [[ -f $PROMETHEUS_CONFIG ]] || die "prometheus: no configuration at $PROMETHEUS_CONFIG"
  mkdir -p "$PROMETHEUS_DIR/data"
  "$K2_CACHE/prometheus/usr/bin/promtool" check config "$PROMETHEUS_CONFIG" >"$PROMETHEUS_DIR/check.log" 2>&1 \
    || die "prometheus: $PROMETHEUS_CONFIG does not pass promtool check config: $(cat "$PROMETHEUS_DIR/check.log")"
  # --web.enable-lifecycle lets a test or an operator reload the configuration (POST
  # /-/reload) without a restart, as one does after editing targets or rules.
  (cd "$PROMETHEUS_DIR" && exec setsid "$PROMETHEUS_BIN" \
      --config.file="$PROMETHEUS_CONFIG" \
      --storage.tsdb.path="$PROMETHEUS_DIR/data" \
      --web.listen-address="$PROMETHEUS_HOST:$PROMETHEUS_PORT" \
      --web.enable-lifecycle \
      >>"$PROMETHEUS_DIR/prometheus.log" 2>&1 </dev/null) &
  echo $! >"$PROMETHEUS_DIR/pid"
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT/-/ready" 2>/dev/null; do
    (( SECONDS < deadline )) || die "prometheus was not ready on $PROMETHEUS_HOST:$PROMETHEUS_PORT within 30 s (see $PROMETHEUS_DIR/prometheus.log)"
    pid_alive "$PROMETHEUS_DIR/pid" || die "prometheus exited during start-up (see $PROMETHEUS_DIR/prometheus.log)"
    sleep 0.3
  done
}

prometheus_stop() { stop_pidfile "$PROMETHEUS_DIR/pid" prometheus; }

prometheus_status() {
  local health=down
  curl -fsS -o /dev/null "http://$PROMETHEUS_HOST:$PROMETHEUS_PORT/-/ready" 2>/dev/null && health=up
  printf '%-8s %-22s %s\n' prometheus "$PROMETHEUS_HOST:$PROMETHEUS_PORT" "$health"
  [[ $health == up ]]
}
