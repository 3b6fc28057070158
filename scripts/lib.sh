# Shared shell definitions for K2's scripts. Sourced, never executed.
# Everything heavy (built binaries, downloaded packages, cargo target dir) lives in
# K2_CACHE, outside the clone, so fresh clones on the same machine reuse it.

K2_ROOT="${K2_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
K2_CACHE="${K2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k2}"
# Local services' data and logs. (Not K2_STATE_DIR: that name overrides the K2 config's
# state_dir in every K2 process started from a shell that sourced this file.)
K2_SERVICES_DIR="${K2_SERVICES_DIR:-$K2_ROOT/.k2/services}"
export K2_ROOT K2_CACHE K2_SERVICES_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$K2_CACHE/target}"

log() { printf '[k2 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[k2] error: %s\n' "$*" >&2; exit 1; }

# wait_tcp HOST PORT SECONDS: true once something accepts connections there.
wait_tcp() {
  local host=$1 port=$2 deadline=$((SECONDS + $3))
  while (( SECONDS < deadline )); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

# tcp_open HOST PORT: true if something listens there right now.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_alive FILE: true if FILE holds the pid of a live process.
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile FILE NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pidfile() {
  local file=$1 name=$2 pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop on SIGTERM; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}
