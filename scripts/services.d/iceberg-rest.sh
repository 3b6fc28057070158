# shellcheck shell=bash
# The Apache Iceberg REST catalog on PostgreSQL — the catalog docker-compose.yml runs (the
# apache/iceberg-rest-fixture code), natively: the runnable iceberg-open-api jar and the
# PostgreSQL JDBC driver from Maven Central, started by a ten-line launcher
# (java/K2RESTCatalogServer.java, compiled once) so that it listens on 127.0.0.1 only.
# Its JDBC catalog lives in the `iceberg` database of scripts/services' PostgreSQL; table
# files go to the S3 server (SeaweedFS) under s3://lakehouse/k2.
#
# Port: $K2_REST_CATALOG_PORT (8182; 8181 is SeaweedFS's own REST catalog). Needs the
# postgres and s3 services up (scripts/services up --production starts them in order).

ICEBERG_VERSION=1.10.0
POSTGRESQL_JDBC_VERSION=42.7.14
REST_CATALOG_HOST=127.0.0.1
REST_CATALOG_PORT="${K2_REST_CATALOG_PORT:-8182}"
REST_CATALOG_HOME="$K2_CACHE/iceberg-rest-$ICEBERG_VERSION"
REST_CATALOG_DIR="$K2_SERVICES_DIR/iceberg-rest"
REST_CATALOG_MARKER="iceberg-rest:$REST_CATALOG_PORT"
REST_CATALOG_WAREHOUSE="${K2_REST_CATALOG_WAREHOUSE:-s3://lakehouse/k2}"

iceberg-rest_install() {
  local launcher="$K2_ROOT/scripts/services.d/java/K2RESTCatalogServer.java"
  if [[ -f $REST_CATALOG_HOME/.complete && $REST_CATALOG_HOME/classes/.built -nt $launcher ]]; then
    return 0
  fi
  log "installing the Apache Iceberg REST catalog $ICEBERG_VERSION from Maven Central into $REST_CATALOG_HOME (once per machine)"
  command -v javac >/dev/null || die "javac not found: the REST catalog's launcher needs a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  mkdir -p "$REST_CATALOG_HOME/libs" "$REST_CATALOG_HOME/classes"
  maven dependency:copy -Dartifact="org.apache.iceberg:iceberg-open-api:$ICEBERG_VERSION" \
    -DoutputDirectory="$REST_CATALOG_HOME/libs" \
    || die "maven could not fetch org.apache.iceberg:iceberg-open-api:$ICEBERG_VERSION"
  maven dependency:copy -Dartifact="org.postgresql:postgresql:$POSTGRESQL_JDBC_VERSION" \
    -DoutputDirectory="$REST_CATALOG_HOME/libs" \
    || die "maven could not fetch org.postgresql:postgresql:$POSTGRESQL_JDBC_VERSION"
  javac --release 17 -cp "$REST_CATALOG_HOME/libs/*" -d "$REST_CATALOG_HOME/classes" "$launcher" \
    || die "compiling $launcher failed"
  touch "$REST_CATALOG_HOME/classes/.built" "$REST_CATALOG_HOME/.complete"
}

iceberg-rest_start() {
  already_up iceberg-rest "$REST_CATALOG_HOST" "$REST_CATALOG_PORT" "$REST_CATALOG_DIR/pid" \
    "$(java_service_pid "$REST_CATALOG_MARKER")" && return 0
  postgres_status >/dev/null || die "iceberg-rest needs postgres up (scripts/services up postgres)"
  s3_status >/dev/null || die "iceberg-rest needs s3 up (scripts/services up s3)"
  if ! postgres_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'iceberg'" | grep -q 1; then
    postgres_psql -d postgres -c "CREATE DATABASE iceberg" >/dev/null || die "creating database iceberg failed"
  fi
  mkdir -p "$REST_CATALOG_DIR"
  # The fixture's CATALOG_* convention: CATALOG_A_B__C is the catalog property a.b-c.
  # shellcheck disable=SC2086  # the heap options are several words
  (cd "$REST_CATALOG_DIR" && exec env \
      CATALOG_URI="jdbc:postgresql://$POSTGRES_HOST:$POSTGRES_PORT/iceberg" \
      CATALOG_JDBC_USER="$POSTGRES_USER" CATALOG_JDBC_PASSWORD="$POSTGRES_PASSWORD" \
      CATALOG_WAREHOUSE="$REST_CATALOG_WAREHOUSE" \
      CATALOG_IO__IMPL=org.apache.iceberg.aws.s3.S3FileIO \
      CATALOG_S3_ENDPOINT="http://$S3_HOST:$S3_PORT" CATALOG_S3_PATH__STYLE__ACCESS=true \
      CATALOG_REST_HOST="$REST_CATALOG_HOST" CATALOG_REST_PORT="$REST_CATALOG_PORT" \
      AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_REGION=us-east-1 \
      setsid java -Dk2.service="$REST_CATALOG_MARKER" ${K2_REST_CATALOG_HEAP_OPTS:--Xms64m -Xmx512m} \
      -cp "$REST_CATALOG_HOME/classes:$REST_CATALOG_HOME/libs/*" org.apache.iceberg.rest.K2RESTCatalogServer \
      >>"$REST_CATALOG_DIR/server.log" 2>&1 </dev/null) &
  echo $! >"$REST_CATALOG_DIR/pid"
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "http://$REST_CATALOG_HOST:$REST_CATALOG_PORT/v1/config" 2>/dev/null; do
    (( SECONDS < deadline )) || die "the Iceberg REST catalog did not answer on $REST_CATALOG_HOST:$REST_CATALOG_PORT within 60 s (see $REST_CATALOG_DIR/server.log)"
    pid_alive "$REST_CATALOG_DIR/pid" || die "the Iceberg REST catalog exited during start-up (see $REST_CATALOG_DIR/server.log)"
    sleep 0.5
  done
}

iceberg-rest_stop() { stop_pidfile "$REST_CATALOG_DIR/pid" iceberg-rest; }

iceberg-rest_status() {
  local health=down
  curl -fsS -o /dev/null "http://$REST_CATALOG_HOST:$REST_CATALOG_PORT/v1/config" 2>/dev/null && health=up
  printf '%-8s %-22s %s\n' iceberg-rest "$REST_CATALOG_HOST:$REST_CATALOG_PORT (on postgres, $REST_CATALOG_WAREHOUSE)" "$health"
  [[ $health == up ]]
}
