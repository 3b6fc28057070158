# shellcheck shell=bash
# A real Confluent-API Schema Registry: Apicurio Registry 3 (Apache-2.0), whose
# Confluent-compatible API lives under /apis/ccompat/v7. Installed from Maven Central
# (io.apicurio:apicurio-registry-app:<v>:tar.gz:all, a Quarkus application) into
# $K2_CACHE/apicurio-registry-<version> and run with the machine's Java 17 (3.0.x is the
# newest line built for Java 17; 3.1 and later need Java 21). ADR-17.
#
# Port: $K2_REGISTRY_PORT (8081, Confluent's usual port). Storage: H2 on disk under
# $K2_SERVICES_DIR/registry, so schema ids survive a restart (Kafka records carry them).
# The URL K2 is given: http://127.0.0.1:<port>/apis/ccompat/v7

REGISTRY_VERSION=3.0.9
REGISTRY_HOST=127.0.0.1
REGISTRY_PORT="${K2_REGISTRY_PORT:-8081}"
REGISTRY_HOME="$K2_CACHE/apicurio-registry-$REGISTRY_VERSION"
REGISTRY_DIR="$K2_SERVICES_DIR/registry"
REGISTRY_MARKER="registry:$REGISTRY_PORT"
REGISTRY_URL="http://$REGISTRY_HOST:$REGISTRY_PORT/apis/ccompat/v7"

registry_install() {
  [[ -f $REGISTRY_HOME/.complete ]] && return 0
  log "installing Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME (once per machine)"
  local tmp
  tmp=$(mktemp -d)
  maven dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
    -DoutputDirectory="$tmp" \
    || { rm -rf "$tmp"; die "maven could not fetch io.apicurio:apicurio-registry-app:$REGISTRY_VERSION"; }
  rm -rf "$REGISTRY_HOME"
  mkdir -p "$REGISTRY_HOME"
  tar -xzf "$tmp"/*.tar.gz -C "$REGISTRY_HOME" || die "unpacking Apicurio Registry failed"
  rm -rf "$tmp"
  [[ -f $REGISTRY_HOME/apicurio-registry-app-$REGISTRY_VERSION-runner.jar ]] \
    || die "Apicurio Registry $REGISTRY_VERSION: no runner jar in the archive"
  touch "$REGISTRY_HOME/.complete"
}

registry_start() {
  already_up registry "$REGISTRY_HOST" "$REGISTRY_PORT" "$REGISTRY_DIR/pid" \
    "$(java_service_pid "$REGISTRY_MARKER")" registry_wait_ready && return 0
  mkdir -p "$REGISTRY_DIR"
  # Quarkus listens on every interface unless told otherwise; the management interface
  # stays off. Access logs are off too (one line per request).
  # shellcheck disable=SC2086  # the heap options are several words
  (cd "$REGISTRY_DIR" && exec setsid java -Dk2.service="$REGISTRY_MARKER" \
      ${K2_REGISTRY_HEAP_OPTS:--Xms64m -Xmx512m} \
      -Dquarkus.http.host="$REGISTRY_HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.management.enabled=false \
      -Dquarkus.http.access-log.enabled=false \
      -Dapicurio.datasource.url="jdbc:h2:file:$REGISTRY_DIR/db/registry" \
      -jar "$REGISTRY_HOME/apicurio-registry-app-$REGISTRY_VERSION-runner.jar" \
      >>"$REGISTRY_DIR/registry.log" 2>&1 </dev/null) &
  echo $! >"$REGISTRY_DIR/pid"
  registry_wait_ready
}

registry_answers() {
  curl -fsS -o /dev/null --max-time 5 "$REGISTRY_URL/subjects" 2>/dev/null
}

registry_wait_ready() {
  local deadline=$((SECONDS + 90))
  until registry_answers; do
    (( SECONDS < deadline )) || die "the schema registry did not answer on $REGISTRY_URL within 90 s (see $REGISTRY_DIR/registry.log)"
    if [[ -f $REGISTRY_DIR/pid ]] && ! pid_alive "$REGISTRY_DIR/pid"; then
      die "the schema registry exited during start-up (see $REGISTRY_DIR/registry.log)"
    fi
    sleep 0.5
  done
}

registry_stop() { stop_pidfile "$REGISTRY_DIR/pid" registry 30; }

registry_status() {
  local health=down
  registry_answers && health=up
  printf '%-8s %-22s %s\n' registry "$REGISTRY_HOST:$REGISTRY_PORT" "$health (Apicurio Registry $REGISTRY_VERSION, $REGISTRY_URL)"
  [[ $health == up ]]
}
