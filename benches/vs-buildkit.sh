#!/usr/bin/env bash
# rbuild beside BuildKit: the same workloads built by both in the same run, alternating, and the
# ratio of the medians (rbuild / BuildKit: below 1 is rbuild faster). Prints figures; asserts
# only that every build succeeds.
#
#   sudo benches/vs-buildkit.sh                     # builds rbuild --release first
#   RBUILD=/path/to/rbuild REPS=5 benches/vs-buildkit.sh
#
# BuildKit is the oracle's (../shared/tools/buildkit/oracle, a real BuildKit v0.32.2 with the
# overlayfs snapshotter; a tool of the developers, never a dependency of rbuild). It runs as
# root, so this script does. Both builders pull `busybox` (and `debian:bookworm` with DEBIAN=1)
# from one registry on 127.0.0.1 standing in for docker.io, and both export the same way.
#
# Environment:
#   RBUILD         the binary to measure (default: build it with cargo)
#   ORACLE         the oracle script (default ../shared/tools/buildkit/oracle beside the repo)
#   REPS           repetitions of each workload and builder (default 3)
#   BENCH_MIRROR   HOST:PORT of a registry that already serves library/busybox (and
#                  library/debian:bookworm) and that the oracle already uses as its mirror:
#                  reused as it is (the oracle is not restarted). Default: a registry of this
#                  script's, and the oracle restarted with it.
#   BIG_MB         size of the big-layer file (default 1024)
#   N_FILES, TREE_BYTES  the many-files context (default 50000 files, 200000000 bytes)
#   DEBIAN=1       also the Debian `apt-get install` workload (debootstrap; needs the network's
#                  package mirror, so its figures move with it)
#   ONLY="a b"     run only these workloads (names below)
#
# Workloads (names): big-layer, ctx-cold, ctx-edit, ctx-noop, git-cold, git-noop, steps,
# steps-new-root, parallel, apt.
#   big-layer  a 1 GiB random file COPYed, cold, exported as an OCI archive with gzip
#   ctx-cold   a 50,000-file / 200 MB context COPYed, cold, OCI archive
#   ctx-edit   the same after one file's content changed, OCI archive
#   ctx-noop   the same unchanged, OCI archive
#   git-cold   ADD of a git repository of 5,000 files (20 MB) from a `git daemon` here, cold
#   git-noop   the same rebuilt with the branch unchanged (the ref is asked, nothing fetched)
#   steps      30 trivial RUN steps, cold (the base image already pulled and another RUN step
#              run by each builder before: a state root in use, a daemon that has run a
#              container; rbuild keeps its compiled seccomp filter in the root)
#   steps-new-root  the same, the state root used only to pull the base (rbuild compiles the
#              filter during the build)
#   parallel   four `RUN sleep 2` stages, rebuilt (--no-cache)
#   apt        FROM debian:bookworm, RUN apt-get update && apt-get install python3 (--no-cache)
# "Cold" is a fresh state root for rbuild and `buildctl prune --all` for BuildKit, both with the
# base image in the registry on this machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"

REPS=${REPS:-3}
BIG_MB=${BIG_MB:-1024}
N_FILES=${N_FILES:-50000}
TREE_BYTES=${TREE_BYTES:-200000000}
ORACLE=${ORACLE:-$repo/../shared/tools/buildkit/oracle}
ONLY=${ONLY:-big-layer ctx-cold ctx-edit ctx-noop git-cold git-noop steps steps-new-root parallel apt}
GIT_FILES=${GIT_FILES:-5000}

[[ $(id -u) == 0 ]] || { echo "run as root: the oracle's BuildKit needs it" >&2; exit 1; }
[[ -x "$ORACLE" ]] || { echo "no oracle at $ORACLE (set ORACLE)" >&2; exit 1; }
use_rbuild "$repo"
use_gnu_time install

T=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/rbuild-vs-buildkit.XXXXXX")
cleanup() {
    stop_registry
    [[ -n "${GIT_DAEMON:-}" ]] && kill "$GIT_DAEMON" 2>/dev/null
    wait 2>/dev/null
    find "$T" -type f -print0 | xargs -0 -r -P 16 -n 2000 rm -f
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the registry and the oracle
if [[ -n "${BENCH_MIRROR:-}" ]]; then
    MIRROR=$BENCH_MIRROR
else
    start_registry "$T/registry"
    MIRROR=127.0.0.1:$REGISTRY_PORT
    RBUILD="$RBUILD" "$repo/testdata/images/make-busybox.sh" "$T/busybox" >/dev/null 2>&1
    skopeo copy --quiet --dest-tls-verify=false "oci:$T/busybox:latest" "docker://$MIRROR/library/busybox:latest"
    if [[ " $ONLY " == *" apt "* && "${DEBIAN:-}" == 1 ]]; then
        log "making debian:bookworm (debootstrap)"
        debootstrap --variant=minbase bookworm "$T/deb-rootfs" >/dev/null
        find "$T/deb-rootfs" \( -type b -o -type c -o -type p -o -type s \) -delete
        mkdir -p "$T/deb-ctx"
        tar --numeric-owner --sort=name -cf "$T/deb-ctx/rootfs.tar" -C "$T/deb-rootfs" .
        "$RBUILD" build --root "$T/deb-state" --progress=quiet -f "$repo/testdata/images/debian/Dockerfile" \
            -o "type=oci,dest=$T/debian,tar=false,name=debian:bookworm" "$T/deb-ctx" >/dev/null
        skopeo copy --quiet --dest-tls-verify=false "oci:$T/debian:bookworm" "docker://$MIRROR/library/debian:bookworm"
    fi
    "$ORACLE" stop >/dev/null 2>&1 || true
    "$ORACLE" start --mirror "$MIRROR" >/dev/null
fi
mkdir -p "$T/xdg/rbuild"
printf '[registry."docker.io"]\nmirrors = ["%s"]\n[registry."%s"]\nhttp = true\n' "$MIRROR" "$MIRROR" >"$T/xdg/rbuild/config.toml"
export XDG_CONFIG_HOME=$T/xdg

# ---------------------------------------------------------------- running both
ROWS=()
STAGES=()
RSS=0
# stage_profile NAME ARGS...: one more rbuild build, untimed, on a fresh state root, with the
# one pass's CPU per stage measured (RBUILD_LOG=rbuild::stages=debug: two clock reads per
# measured piece, too dear for the timed rounds); its CPU-seconds per GiB of layer tar in STAGES.
stage_profile() {
    local name=$1; shift
    [[ " $ONLY " == *" $name "* ]] || return 0
    local root=$T/roots/stages-$name line
    mkdir -p "$root"
    RBUILD_LOG=rbuild::stages=debug "$RBUILD" build --root "$root" --progress=plain "${@//@OUT@/$T/stages.out}" >"$T/stages.log" 2>&1 \
        || { echo "rbuild failed (stage profile of $name)" >&2; tail -30 "$T/stages.log" >&2; exit 1; }
    rm -rf "$T/stages.out"
    line=$(grep -o 'tar_bytes=.*' "$T/stages.log" | tail -1)
    STAGES+=("$(awk -v name="$name" -v line="$line" 'BEGIN {
        n = split(line, fields, " "); out = name
        for (i = 1; i <= n; i++) { split(fields[i], kv, "="); value[kv[1]] = kv[2] }
        gib = value["tar_bytes"] / 1073741824
        out = out sprintf("\t%.2f", gib)
        total = 0
        split("read tar hash compress write", stages, " ")
        for (i = 1; i <= 5; i++) { out = out sprintf("\t%.2f", value[stages[i]] / gib); total += value[stages[i]] }
        print out sprintf("\t%.2f", total / gib)
    }')")
}
# rbuild_run ROOT ARGS...: one rbuild build; its wall time in $WALL, peak RSS (MB) in $RSS
rbuild_run() {
    local root=$1; shift
    local t0 t1
    t0=$(now)
    "$GNU_TIME" -f %M -o "$T/rss" "$RBUILD" build --root "$root" --progress=plain "$@" >"$T/rbuild.log" 2>&1 \
        || { echo "rbuild failed: $RBUILD build --root $root $*" >&2; tail -30 "$T/rbuild.log" >&2; exit 1; }
    t1=$(now)
    WALL=$(seconds_between "$t0" "$t1")
    RSS=$(awk '/^[0-9]+$/ { v = $1 } END { printf "%.0f", v / 1024 }' "$T/rss")
}
# buildkit_run ARGS...: one oracle build; its wall time in $WALL
buildkit_run() {
    local t0 t1
    t0=$(now)
    "$ORACLE" build --progress=plain "$@" >"$T/buildkit.log" 2>&1 \
        || { echo "BuildKit failed: $ORACLE build $*" >&2; tail -30 "$T/buildkit.log" >&2; exit 1; }
    t1=$(now)
    WALL=$(seconds_between "$t0" "$t1")
}
buildkit_cold() { "$ORACLE" buildctl prune --all >/dev/null 2>&1; sync; }
# On ext4 without a journal, a new inode is never one deleted in the last 60 s (360 s while
# its inode table block is dirty): after a prune of 50,000 files, every file created skips over
# them, one inode table read each, and a build creating 50,000 files took 2.5 times as long
# (measured here: rbuild ctx-cold 8 s before BuildKit's prune, 20 s after). The journal-less
# filesystem waits the deletions out before the next build, whoever builds next.
no_journal() {
    local device
    device=$(stat -c '%Hd:%Ld' "$T" 2>/dev/null) || return 1
    device=$(basename "$(readlink -f "/sys/dev/block/$device")")
    [[ -r /sys/fs/ext4/$device/journal_task && $(cat "/sys/fs/ext4/$device/journal_task") == "<none>" ]]
}
buildkit_cold_settled() {
    buildkit_cold
    if no_journal; then sleep 61; fi
}

# workload NAME RBUILD_PREP BUILDKIT_PREP -- ARGS...: REPS rounds, each rbuild then BuildKit (the
# order swapped every round), each after its PREP and a `sync` (untimed; PREP gets the round
# number). ARGS are given to both; @OUT@ becomes a fresh output path, @ROOT@ rbuild's state root
# for the round. The `sync`: a build that follows the other builder's otherwise runs beside the
# writeback of what that one wrote (BuildKit's one-file edit writes a new 200 MB snapshot; rbuild's
# edit rounds took 1.6 to 1.7 s after its own, 2.4 to 2.5 s right after BuildKit's).
workload() {
    local name=$1 rprep=$2 bprep=$3; shift 4
    [[ " $ONLY " == *" $name "* ]] || return 0
    log "$name"
    local r rw=() bw=() rss=0
    for ((r = 1; r <= REPS; r++)); do
        local order=(rbuild buildkit) who
        ((r % 2 == 0)) && order=(buildkit rbuild)
        for who in "${order[@]}"; do
            local out="$T/out/$who.$name.$r" args=() a
            rm -rf "$out"
            mkdir -p "$T/out"
            if [[ $who == rbuild ]]; then
                $rprep "$r"
                sync
                for a in "$@"; do a=${a//@OUT@/$out}; args+=("${a//@ROOT@/$ROOT}"); done
                rbuild_run "$ROOT" "${args[@]}"
                rw+=("$WALL")
                ((RSS > rss)) && rss=$RSS
            else
                $bprep "$r"
                sync
                for a in "$@"; do a=${a//@OUT@/$out}; args+=("${a//@ROOT@/$ROOT}"); done
                buildkit_run "${args[@]}"
                bw+=("$WALL")
            fi
            printf '  %-10s round %d %-8s %8.2fs\n' "$name" "$r" "$who" "$WALL"
            rm -rf "$out"
        done
    done
    local rm bm
    rm=$(printf '%s\n' "${rw[@]}" | median)
    bm=$(printf '%s\n' "${bw[@]}" | median)
    ROWS+=("$name"$'\t'"$rm"$'\t'"$bm"$'\t'"$(awk -v a="$rm" -v b="$bm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"$'\t'"$rss")
}

ROOT=$T/root
fresh_root() { ROOT=$T/roots/$RANDOM$RANDOM; mkdir -p "$ROOT"; sync; }
# pruned_root: fresh_root once the earlier rounds' roots are removed, as BuildKit's cold rounds
# prune its state first; for the big layer, whose few files cost nothing to remove (removing the
# many-file contexts' roots would slow the next round's file creation, see no_journal). Kept,
# every big-layer round's 2 GiB stayed in the page cache, which grew into memory the VM had not
# used since it booted, where the kernel's copies ran at a fraction of their speed: rounds took
# 4.3, 4.7, 8.8 and 8.6 s with the roots kept, 4.3 to 4.5 s with them removed (perf: the
# kernel's memcpy was 27 % of the CPU time of a slow round, 8 % of a fast one).
pruned_root() {
    rm -rf "$T/roots"
    fresh_root "$@"
}
same_root() { :; }
nothing() { :; }

echo "rbuild: $RBUILD ($("$RBUILD" --version 2>/dev/null || echo '?'))"
echo "BuildKit: $ORACLE; mirror $MIRROR"
echo "machine: $(machine_line); $REPS rounds"

# ---------------------------------------------------------------- big-layer
mkdir -p "$T/big"
if [[ " $ONLY " == *" big-layer "* ]]; then
    head -c "$((BIG_MB * 1048576))" /dev/urandom >"$T/big/big.bin"
    printf 'FROM scratch\nCOPY big.bin /big.bin\n' >"$T/big/Dockerfile"
fi
workload big-layer pruned_root buildkit_cold -- -o type=oci,dest=@OUT@ "$T/big"
stage_profile big-layer -o type=oci,dest=@OUT@ "$T/big"
# Inputs stay until the end: deleting them here (50,000 files) would slow the next workload's
# file creation on a journal-less ext4 (see no_journal).

# ---------------------------------------------------------------- the many-files context
CTX=$T/tree/ctx
if [[ " $ONLY " == *" ctx-"* ]]; then
    mkdir -p "$T/tree"
    python3 "$here/gen_tree.py" "$CTX" "$N_FILES" "$TREE_BYTES"
    printf 'FROM scratch\nCOPY . /tree\n' >"$CTX/Dockerfile"
    CHANGED=$(sed -n "$((N_FILES / 2 + 1))p" "$T/tree/files.txt")
fi
workload ctx-cold fresh_root buildkit_cold_settled -- -o type=oci,dest=@OUT@ "$CTX"
stage_profile ctx-cold -o type=oci,dest=@OUT@ "$CTX"
# Warm both once, then time rebuilds.
if [[ " $ONLY " == *" ctx-edit "* || " $ONLY " == *" ctx-noop "* ]]; then
    fresh_root 0
    rbuild_run "$ROOT" -o "type=oci,dest=$T/warm.tar" "$CTX"
    buildkit_run -o "type=oci,dest=$T/warm.tar" "$CTX"
    rm -f "$T/warm.tar"
fi
EDIT=0
edit_one() { EDIT=$((EDIT + 1)); printf 'edited %s %d\n' "$1" "$EDIT" >"$CTX/$CHANGED"; }
workload ctx-edit edit_one edit_one -- -o type=oci,dest=@OUT@ "$CTX"
# The last edit came after one builder's last build: both catch up, untimed, exporting as the
# timed rounds do (so the edited layer's blob exists before the first no-op round).
if [[ " $ONLY " == *" ctx-noop "* ]]; then
    rbuild_run "$ROOT" -o "type=oci,dest=$T/warm.tar" "$CTX"
    buildkit_run -o "type=oci,dest=$T/warm.tar" "$CTX"
    rm -f "$T/warm.tar"
fi
workload ctx-noop same_root nothing -- -o type=oci,dest=@OUT@ "$CTX"

# ---------------------------------------------------------------- a git repository
if [[ " $ONLY " == *" git-"* ]]; then
    mkdir -p "$T/git/served" "$T/git/ctx"
    python3 "$here/gen_tree.py" "$T/git/work" "$GIT_FILES" 20000000 >/dev/null
    git -C "$T/git/work" -c init.defaultBranch=main init -q
    git -C "$T/git/work" add -A
    git -C "$T/git/work" -c user.name=bench -c user.email=bench@localhost commit -q -m tree
    git clone -q --bare "$T/git/work" "$T/git/served/repo.git"
    rm -rf "$T/git/work"
    GIT_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # `git daemon` runs `git-daemon`: start that one, so the cleanup's kill reaches the server.
    "$(git --exec-path)/git-daemon" --export-all --reuseaddr --listen=127.0.0.1 --port="$GIT_PORT" \
        --base-path="$T/git/served" "$T/git/served" 2>/dev/null &
    GIT_DAEMON=$!
    for _ in $(seq 50); do git ls-remote "git://127.0.0.1:$GIT_PORT/repo.git" >/dev/null 2>&1 && break; sleep 0.1; done
    printf 'FROM scratch\nADD git://127.0.0.1:%s/repo.git#main /src/\n' "$GIT_PORT" >"$T/git/ctx/Dockerfile"
fi
workload git-cold fresh_root buildkit_cold -- -o type=oci,dest=@OUT@ "$T/git/ctx"
if [[ " $ONLY " == *" git-noop "* ]]; then
    fresh_root 0
    rbuild_run "$ROOT" -o "type=oci,dest=$T/warm.tar" "$T/git/ctx"
    buildkit_run -o "type=oci,dest=$T/warm.tar" "$T/git/ctx"
    rm -f "$T/warm.tar"
fi
workload git-noop same_root nothing -- -o type=oci,dest=@OUT@ "$T/git/ctx"

# ---------------------------------------------------------------- RUN steps
mkdir -p "$T/steps" "$T/parallel" "$T/apt"
{
    echo "FROM busybox"
    for i in $(seq 1 30); do echo "RUN echo step-$i > /step-$i"; done
} >"$T/steps/Dockerfile"
{
    for stage in a b c d; do printf 'FROM busybox AS %s\nRUN sleep 2 && echo %s > /%s\n' "$stage" "$stage" "$stage"; done
    echo "FROM scratch"
    for stage in a b c d; do echo "COPY --from=$stage /$stage /$stage"; done
} >"$T/parallel/Dockerfile"
printf 'FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*\n' \
    >"$T/apt/Dockerfile"
# The base image pulled once by each builder (and another step run): the steps are what is timed.
mkdir -p "$T/pull" "$T/pull-and-run" && echo "FROM busybox" >"$T/pull/Dockerfile"
printf 'FROM busybox\nRUN true\n' >"$T/pull-and-run/Dockerfile"
pulled_root() { fresh_root "$1"; "$RBUILD" build --root "$ROOT" --progress=quiet "$T/pull" >/dev/null 2>&1; }
used_root() { fresh_root "$1"; "$RBUILD" build --root "$ROOT" --progress=quiet "$T/pull-and-run" >/dev/null 2>&1; }
buildkit_keep_base() { buildkit_cold; "$ORACLE" build --progress=quiet "$T/pull" >/dev/null 2>&1; }
buildkit_used() { buildkit_cold; "$ORACLE" build --progress=quiet "$T/pull-and-run" >/dev/null 2>&1; }
workload steps used_root buildkit_used -- "$T/steps"
workload steps-new-root pulled_root buildkit_keep_base -- "$T/steps"
fresh_root 0
rbuild_run "$ROOT" "$T/parallel"
workload parallel same_root nothing -- --no-cache "$T/parallel"
if [[ "${DEBIAN:-}" == 1 ]]; then
    workload apt same_root nothing -- --no-cache "$T/apt"
fi

# ---------------------------------------------------------------- the table
printf '\nworkload\trbuild s\tBuildKit s\tratio\trbuild peak RSS MB\n'
printf '%s\n' "${ROWS[@]}"
if ((${#STAGES[@]})); then
    printf '\nrbuild one pass, CPU-seconds per GiB of layer tar (untimed run, measured)\nworkload\tGiB\tread\ttar\thash\tcompress\twrite\ttotal\n'
    printf '%s\n' "${STAGES[@]}"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
