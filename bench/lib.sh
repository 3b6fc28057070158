# Shared by the bench/* scripts. Sourced, never executed.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$K2_ROOT"
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
