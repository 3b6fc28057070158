# shellcheck shell=bash
# Apache Kafka in KRaft mode: one process, broker and controller combined, on 127.0.0.1.
# Installed from Maven Central only (ADR-16): the runtime closure of
# org.apache.kafka:kafka_2.13 is copied once into $K2_CACHE/kafka-<version>/libs by
# Maven (scripts/services.d/maven/kafka.pom.xml) and started as `java kafka.Kafka`, the same
# entry point the Apache distribution's scripts use. The same version runs in
# docker-compose.yml.
#
# Ports: the broker on $K2_KAFKA_PORT (9092), its controller on the next port.
# Data and logs: $K2_SERVICES_DIR/kafka/{data,logs}; storage is formatted on first start.
#
# With K2_KAFKA_SASL_SSL_PORT set, the broker also listens there with SASL_SSL: TLS with a
# certificate for 127.0.0.1 signed by a CA of its own ($K2_SERVICES_DIR/kafka/tls/ca.pem,
# made with openssl on first start) and SCRAM-SHA-512 for the user `k2`, password
# $K2_KAFKA_SCRAM_PASSWORD, created when storage is formatted — how a production cluster
# is reached, for the tests of K2's secured client path.

KAFKA_VERSION=4.1.1
KAFKA_LOG4J_VERSION=2.24.3
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${K2_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
KAFKA_HOME="$K2_CACHE/kafka-$KAFKA_VERSION"
KAFKA_DIR="$K2_SERVICES_DIR/kafka"
# The marker by which `pgrep` finds this broker, also when another checkout started it.
KAFKA_MARKER="kafka:$KAFKA_PORT"
KAFKA_SASL_SSL_PORT="${K2_KAFKA_SASL_SSL_PORT:-}"
KAFKA_SCRAM_PASSWORD="${K2_KAFKA_SCRAM_PASSWORD:-k2-scram-secret}"
KAFKA_KEYSTORE_PASSWORD=k2-keystore

kafka_install() {
  [[ -f $KAFKA_HOME/libs/.complete ]] && return 0
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME (once per machine)"
  rm -rf "$KAFKA_HOME/libs"
  maven -f "$K2_ROOT/scripts/services.d/maven/kafka.pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$KAFKA_LOG4J_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" \
    || die "maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  touch "$KAFKA_HOME/libs/.complete"
}

kafka_java() {
  java -cp "$KAFKA_HOME/libs/*" "$@"
}

# The SASL_SSL listener's TLS material: a CA, and the broker's key and certificate (for
# IP 127.0.0.1) in a PKCS#12 keystore.
kafka_tls() {
  local tls="$KAFKA_DIR/tls"
  [[ -f $tls/broker.p12 ]] && return 0
  command -v openssl >/dev/null || die "kafka: the SASL_SSL listener needs openssl"
  mkdir -p "$tls"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=K2 test CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$KAFKA_HOST" \
        -keyout "$tls/broker.key" -out "$tls/broker.csr" &&
      printf 'subjectAltName=IP:%s,DNS:localhost\n' "$KAFKA_HOST" >"$tls/san.ext" &&
      openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/san.ext" -out "$tls/broker.pem" &&
      openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" \
        -passout "pass:$KAFKA_KEYSTORE_PASSWORD" -out "$tls/broker.p12.part" &&
      mv "$tls/broker.p12.part" "$tls/broker.p12"
  } >>"$KAFKA_DIR/logs/tls.log" 2>&1 || die "kafka: making TLS material failed (see $KAFKA_DIR/logs/tls.log)"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  local listeners="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n $KAFKA_SASL_SSL_PORT ]]; then
    kafka_tls
    listeners+=",SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  cat >"$KAFKA_DIR/server.properties" <<PROPS
# Written by scripts/services.d/kafka.sh on every start; edit that file, not this one.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$KAFKA_DIR/data
# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Topics are made by k2-admin from config/topics.yaml, never by a producer's typo.
auto.create.topics.enable=false
num.partitions=1
# A lone consumer should not wait 3 s for company before it gets its partitions.
group.initial.rebalance.delay.ms=0
# KIP-848 groups (group.protocol=consumer) get their session timeout and heartbeat from
# the broker. A local broker expires a killed member within seconds, as classic groups do
# with the session.timeout.ms their members choose (the production defaults are 45 s / 5 s).
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=2000
PROPS
  if [[ -n $KAFKA_SASL_SSL_PORT ]]; then
    cat >>"$KAFKA_DIR/server.properties" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_DIR/tls/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$KAFKA_KEYSTORE_PASSWORD
PROPS
  fi
  cat >"$KAFKA_DIR/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    RollingFile:
      name: server
      fileName: "${sys:kafka.logs.dir}/server.log"
      filePattern: "${sys:kafka.logs.dir}/server.log.%i"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      SizeBasedTriggeringPolicy:
        size: 50MB
      DefaultRolloverStrategy:
        max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: server
YAML
}

kafka_start() {
  already_up kafka "$KAFKA_HOST" "$KAFKA_PORT" "$KAFKA_DIR/pid" \
    "$(java_service_pid "$KAFKA_MARKER")" kafka_wait_ready && return 0
  tcp_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT" \
    && die "the controller port $KAFKA_HOST:$KAFKA_CONTROLLER_PORT is taken by another process"
  kafka_write_config
  if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid) || die "kafka: StorageTool random-uuid failed"
    local scram=()
    [[ -n $KAFKA_SASL_SSL_PORT ]] &&
      scram=(--add-scram "SCRAM-SHA-512=[name=k2,password=$KAFKA_SCRAM_PASSWORD]")
    kafka_java kafka.tools.StorageTool format --standalone --cluster-id "$cluster_id" \
      --config "$KAFKA_DIR/server.properties" "${scram[@]}" >>"$KAFKA_DIR/logs/format.log" 2>&1 \
      || die "kafka: formatting storage in $KAFKA_DIR/data failed (see $KAFKA_DIR/logs/format.log)"
  fi
  # The JVM flags of the Apache distribution's kafka-run-class.sh, with a smaller heap.
  # shellcheck disable=SC2086  # the heap options are several words
  (cd "$KAFKA_DIR" && exec setsid java -Dk2.service="$KAFKA_MARKER" \
      ${K2_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
      -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      >>"$KAFKA_DIR/logs/stdout.log" 2>&1 </dev/null) &
  echo $! >"$KAFKA_DIR/pid"
  kafka_wait_ready
}

# Ready means the broker answers a metadata request (through librdkafka, as K2 will ask).
kafka_wait_ready() {
  local deadline=$((SECONDS + 90))
  until kafka_answers; do
    (( SECONDS < deadline )) || die "kafka did not answer metadata requests on $KAFKA_HOST:$KAFKA_PORT within 90 s (see $KAFKA_DIR/logs/server.log)"
    if [[ -f $KAFKA_DIR/pid ]] && ! pid_alive "$KAFKA_DIR/pid"; then
      die "kafka exited during start-up (see $KAFKA_DIR/logs/server.log and stdout.log)"
    fi
    sleep 0.5
  done
}

kafka_answers() {
  tcp_open "$KAFKA_HOST" "$KAFKA_PORT" || return 1
  "$(k2_python)" - "$KAFKA_HOST:$KAFKA_PORT" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0}).list_topics(timeout=5)
sys.exit(0 if md.brokers else 1)
PY
}

# A controlled shutdown flushes the logs and moves no partitions (one node); it takes a
# few seconds.
kafka_stop() { stop_pidfile "$KAFKA_DIR/pid" kafka 60; }

kafka_status() {
  local health=down
  kafka_answers && health=up
  printf '%-8s %-22s %s\n' kafka "$KAFKA_HOST:$KAFKA_PORT" "$health (Apache Kafka $KAFKA_VERSION, KRaft)"
  [[ $health == up ]]
}
