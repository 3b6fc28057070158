# shellcheck shell=bash
# Shared shell definitions for K2's scripts. Sourced, never executed.
# Everything heavy (built binaries, downloaded packages, cargo target dir) lives in
# K2_CACHE, outside the clone, so fresh clones on the same machine reuse it.

# Always this script's checkout, never an inherited value: a clone's scripts run from a
# shell that sourced another checkout's lib.sh must still build and test the clone.
K2_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
pid_alive() { [[ -f $1 ]] && kill -0 "$(head -n 1 "$1")" 2>/dev/null; }

# already_up NAME HOST PORT PIDFILE [OTHER_PID [READY]]: asked before starting a service.
# 1 when its port is free (start it); 0 when it is up already — started from this services
# dir (PIDFILE's process lives), or the same service from another checkout's (OTHER_PID
# non-empty; READY, a function, is then awaited). Dies when a process K2 did not start
# holds the port.
already_up() {
  local name=$1 host=$2 port=$3 pidfile=$4 other=${5:-} ready=${6:-}
  tcp_open "$host" "$port" || return 1
  pid_alive "$pidfile" && return 0
  if [[ -n $other ]]; then
    log "$name: using the one already running on $host:$port (pid $other, another services dir)"
    [[ -z $ready ]] || "$ready"
    return 0
  fi
  die "$name: port $host:$port is taken by a process K2 did not start"
}

# stop_pidfile FILE NAME [SECONDS]: SIGTERM, wait up to SECONDS (10), then SIGKILL.
stop_pidfile() {
  local file=$1 name=$2 seconds=${3:-10} pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq $((seconds * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop on SIGTERM; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}

# The project's Python (a venv in the cache) with the official confluent-kafka client:
# the tests' reference producer and the services' metadata probe. Created on first use.
K2_VENV="$K2_CACHE/venv"
# The interpreter PyO3 builds the Python package against (python/): the venv's, for cargo
# and maturin alike, so they share one cached build of it.
export PYO3_PYTHON="${PYO3_PYTHON:-$K2_VENV/bin/python}"
k2_python() {
  if ! "$K2_VENV/bin/python" -c "import confluent_kafka.schema_registry.avro" 2>/dev/null; then
    log "installing confluent-kafka into $K2_VENV"
    [[ -x $K2_VENV/bin/pip ]] || python3 -m venv "$K2_VENV"
    "$K2_VENV/bin/pip" install -q "confluent-kafka[avro,schemaregistry]==2.12.*" >&2 \
      || die "pip install confluent-kafka failed"
  fi
  printf '%s\n' "$K2_VENV/bin/python"
}

# maven ARGS...: Maven in batch mode with its local repository in the cache (so an empty
# ~/.cache/k2 really is a cold start, and clones share what was downloaded).
maven() {
  command -v mvn >/dev/null || die "mvn not found: K2's local services need Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)"
  mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$K2_CACHE/m2" "$@"
}

# java_service_pid MARKER: the pid of a live JVM started with -Dk2.service=MARKER
# (by this checkout or another one on the machine), empty if none.
java_service_pid() { pgrep -f -- "-Dk2.service=$1( |$)" | head -n 1 || true; }

# docker_engine: makes sure a Docker engine answers. Starts dockerd (as root) when it is
# installed and not running — with --iptables=false: K2's builds and containers use the
# host's network and need no NAT rules, which some machines cannot load. Dies, saying why,
# when no engine can be had; never skips.
docker_engine() {
  command -v docker >/dev/null || die "docker not found (apt-get install docker.io)"
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed"
  ((EUID == 0)) || die "no Docker engine answers; start one (dockerd) or run as root to let K2 start it"
  mkdir -p "$K2_CACHE"
  log "starting dockerd (log: $K2_CACHE/dockerd.log)"
  setsid dockerd --iptables=false >>"$K2_CACHE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  tail -n 20 "$K2_CACHE/dockerd.log" >&2
  die "dockerd did not answer within 60 s (log above)"
}

# make_debian_base RELEASE TARBALL: a minimal Debian root filesystem (debootstrap, from the
# host's Debian mirror), trimmed as Debian's slim images are, as a tarball for `docker import`.
make_debian_base() {
  local release=$1 tarball=$2 root mirror
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  mirror=${K2_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  root=$(mktemp -d)
  log "making a Debian $release base image with debootstrap from $mirror (about 2 minutes, once)"
  debootstrap --variant=minbase "$release" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; die "debootstrap $release failed"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root.log"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$release" "$mirror" "$release" "$release" >"$root/etc/apt/sources.list"
  mkdir -p "$(dirname "$tarball")"
  tar -C "$root" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$root"
}
