# Helpers the bench scripts share: sourced (`. "$here/lib.sh"`), never run. Each script keeps
# its own scenarios and its own reading of --progress=plain; what they all repeat is here: the
# binary to measure, GNU time, wall-clock timing, medians, and a registry on 127.0.0.1.
#
# Expects `set -euo pipefail` in the script that sources it. Variables it sets are upper case
# (RBUILD, GNU_TIME, REGISTRY_PORT, ...); functions print figures on stdout and notes on stderr.

# log TEXT: a section heading with the seconds since the script started.
log() { printf '\n== [%3ds] %s\n' "$SECONDS" "$*"; }

# use_rbuild REPO: sets RBUILD to the binary to measure, an absolute path: $RBUILD if given,
# else `cargo build --release` in REPO (honouring CARGO_TARGET_DIR).
use_rbuild() {
    local repo=$1
    if [[ -z "${RBUILD:-}" ]]; then
        log "building rbuild (cargo build --release)"
        (cd "$repo" && cargo build --release >&2)
        RBUILD="${CARGO_TARGET_DIR:-$repo/target}/release/rbuild"
    fi
    [[ -x "$RBUILD" ]] || { echo "no executable rbuild at $RBUILD" >&2; exit 1; }
    RBUILD=$(realpath "$RBUILD")
}

# use_gnu_time [install]: sets GNU_TIME to /usr/bin/time when it can report peak RSS (`-f %M`),
# else to "" with a warning. With `install`, tries apt-get first (as root).
use_gnu_time() {
    GNU_TIME=/usr/bin/time
    if [[ "${1:-}" == install ]] && ! "$GNU_TIME" -f %M true >/dev/null 2>&1; then
        if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
            log "installing GNU time"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null 2>&1 || true
        fi
    fi
    "$GNU_TIME" -f %M true >/dev/null 2>&1 || GNU_TIME=""
    [[ -n "$GNU_TIME" ]] || echo "warning: GNU time missing, no peak RSS figures" >&2
}

# machine_line: cores, RAM and load of this machine, for the head of a report.
machine_line() {
    printf '%s cores, %s RAM, load %s' "$(nproc)" "$(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# now: the wall clock in seconds, with nanoseconds.
now() { date +%s.%N; }

# seconds_between START END [DIGITS]: END - START, with DIGITS decimals (default 3).
seconds_between() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN { printf "%.*f", d, b - a }'; }

# median: the median of the numbers on stdin (one a line), two decimals.
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure LABEL CMD...: runs CMD (output discarded), prints `LABEL  N.NNN s` and keeps the
# seconds in $ELAPSED.
ELAPSED=0
measure() {
    local label=$1; shift
    local start end
    start=$(now)
    "$@" >/dev/null 2>&1
    end=$(now)
    ELAPSED=$(seconds_between "$start" "$end")
    printf '%-48s %8.3f s\n' "$label" "$ELAPSED"
}

# start_registry DIR: Debian's distribution registry (docker-registry) on a free port of
# 127.0.0.1, its storage, config and log in DIR; waits until it answers. Sets REGISTRY_PORT,
# REGISTRY_PID and REGISTRY_CONFIG (an rbuild config.toml giving it plain HTTP). Call
# stop_registry from the script's exit trap.
REGISTRY_PID=
start_registry() {
    local dir=$1
    [[ -x /usr/bin/docker-registry ]] || { echo "install Debian's docker-registry package" >&2; exit 1; }
    command -v python3 >/dev/null || { echo "python3 is needed to find a free port" >&2; exit 1; }
    mkdir -p "$dir"
    REGISTRY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
    /usr/bin/docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    REGISTRY_PID=$!
    local _
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT") 2>/dev/null || { echo "the registry did not start" >&2; cat "$dir/registry.log" >&2; exit 1; }
    REGISTRY_CONFIG=$dir/config.toml
    printf '[registry."127.0.0.1:%s"]\nhttp = true\n' "$REGISTRY_PORT" >"$REGISTRY_CONFIG"
}

# stop_registry: ends the registry start_registry started, if any.
stop_registry() {
    if [[ -n "$REGISTRY_PID" ]]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
        REGISTRY_PID=
    fi
}
