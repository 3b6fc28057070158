# shellcheck shell=bash
# Shared by the bench/* scripts. Sourced, never executed.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$K2_ROOT" || exit 1
BIN="$CARGO_TARGET_DIR/release"

bench_build() {
  scripts/bootstrap
  log "building release binaries"
  cargo build --release --locked --workspace --bins --examples
}

# bench_machine: "nproc N, CPU model, commit" for the dated rows.
bench_machine() {
  printf 'nproc %s, %s, %s' "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs/benchmarks.md' || echo +dirty)"
}

# bench_record SECTION_HEADER ROW: appends a dated row under SECTION_HEADER in
# docs/benchmarks.md (the header is added the first time).
bench_record() {
  local header=$1 row=$2 file=docs/benchmarks.md
  [[ -f $file ]] || printf '# Benchmarks\n\nRows appended by the scripts in bench/.\n' >"$file"
  grep -qxF "$header" "$file" || printf '\n%s\n' "$header" >>"$file"
  # Insert after the last line of this section (before the next "## " header or EOF).
  python3 - "$file" "$header" "$(date -u +%F) ($(bench_machine)): $row" <<'PY'
import sys
path, header, row = sys.argv[1:]
lines = open(path).read().split("\n")
i = lines.index(header) + 1
while i < len(lines) and not lines[i].startswith("## "):
    i += 1
while i > 0 and lines[i - 1] == "":
    i -= 1
lines.insert(i, row)
open(path, "w").write("\n".join(lines))
PY
}

# bench_broker: an empty Apache Kafka broker of its own on $K2_BENCH_KAFKA_PORT (29092), so
# earlier runs' data and the demo's or tests' brokers do not share its disk cache or its
# cores. Scripts stop it on exit (bench_broker_stop) so later benchmarks run on a quiet
# machine.
bench_broker() {
  export K2_KAFKA_PORT="${K2_BENCH_KAFKA_PORT:-29092}"
  export K2_SERVICES_DIR="$K2_ROOT/.k2/bench-services"
  scripts/services down kafka >/dev/null 2>&1 || true
  rm -rf "$K2_SERVICES_DIR/kafka"
  scripts/services up kafka
}
# Its data goes with it: an hour's soak leaves ~17 GB in the broker's log (bench_broker
# starts empty anyway).
bench_broker_stop() { scripts/services down kafka >/dev/null 2>&1; rm -rf "$K2_SERVICES_DIR/kafka"; }

# bench_config DIR GROUP: DIR/k2.toml for that broker (state under DIR) with its topics
# created.
bench_config() {
  local dir=$1 group=$2
  cat >"$dir/k2.toml" <<TOML
state_dir = "state"
topics_file = "$K2_ROOT/config/topics.yaml"
[schemas]
dir = "$K2_ROOT/schemas"
[kafka]
bootstrap_servers = "127.0.0.1:$K2_KAFKA_PORT"
group_id = "$group"
[sink]
dead_letter_topic = "market.dlq"
[metrics]
address = "127.0.0.1:0"
TOML
  "$BIN/k2-admin" --config "$dir/k2.toml" topics apply >/dev/null
}
