#!/usr/bin/env bash
# rbuild benchmarks: prints figures, asserts nothing beyond every build succeeding.
#
#   benches/run.sh                      # builds with `cargo build --release` first
#   RBUILD=/path/to/rbuild benches/run.sh
#
# Environment:
#   RBUILD         the binary to measure (default: build it with cargo)
#   REPS           repetitions of every timed build (default 3)
#   BENCH_TMPDIR   where the temp dir goes (default $TMPDIR or /tmp); needs ~10 GB free
#   BENCH_KEEP=1   keep the temp dir (for reproducing a figure)
#   BIG_MB         size of the big-layer file in MiB (default 1024)
#   N_FILES, TREE_BYTES  size of the many-files context (default 50000 files, 200000000 bytes)
#
# 1. A context of 50,000 files / ~200 MB (generated deterministically by gen_tree.py):
#    cold build (fresh --root, with -o type=oci), no-op rebuild, rebuild after touching 100
#    files (mtime only), rebuild after changing one file's content; rebuilds with and without -o.
# 2. A 1 GiB layer of random data: the cold build, then exporting it from the cache as an OCI
#    archive with gzip (default), zstd and no compression: the first export from a cache that
#    holds the built layer, and the same export repeated.
# Each run reports wall time (median of REPS, plus every repetition), peak RSS (GNU time) and
# the cache status of the steps parsed from --progress=plain (what the run expected: all
# CACHED on a no-op). A run whose cache status differs from the expected one is flagged at
# the end with the command that reproduces it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
REPS=${REPS:-3}
BIG_MB=${BIG_MB:-1024}
N_FILES=${N_FILES:-50000}
TREE_BYTES=${TREE_BYTES:-200000000}

. "$here/lib.sh"

# ---------------------------------------------------------------- tools
use_rbuild "$repo"
use_gnu_time install
command -v python3 >/dev/null || { echo "python3 is needed to generate the context" >&2; exit 1; }

# ---------------------------------------------------------------- temp dir
base=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
T=$(mktemp -d "$base/rbuild-bench.XXXXXX")
# Many unlinks at once: on this VM's ext4 (mounted with discard) a plain rm -rf of 50,000 files
# takes 25-50 s, the same files removed 16 at a time take 2-4 s.
fast_rm() {
    [[ -e "$1" ]] || return 0
    find "$1" -type f -print0 | xargs -0 -r -P 16 -n 2000 rm -f
    rm -rf "$1"
}
cleanup() {
    if [[ "${BENCH_KEEP:-}" == 1 ]]; then
        echo "kept $T" >&2
    else
        local t0=$SECONDS
        fast_rm "$T"
        echo "(removed $T in $((SECONDS - t0))s; whole script ${SECONDS}s)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- measuring
ROWS=()        # table rows, tab-separated
ISSUES=()      # unexpected cache status, with reproduction commands
RUN_WALL="" RUN_RSS="" RUN_CACHE="" RUN_UNCACHED="" RUN_CTX="" RUN_EXPORT=""

# run_once LOG ARGS...: run rbuild once; sets RUN_WALL (s), RUN_RSS (MB), RUN_CACHE (cached/total),
# RUN_UNCACHED (steps not CACHED), RUN_CTX (load build context step, s), RUN_EXPORT (export step, s)
run_once() {
    local logf=$1; shift
    local rssf="$logf.rss" t0 t1 rc=0
    t0=$(now)
    if [[ -n "$GNU_TIME" ]]; then
        "$GNU_TIME" -f %M -o "$rssf" "$RBUILD" "$@" >"$logf" 2>&1 || rc=$?
    else
        "$RBUILD" "$@" >"$logf" 2>&1 || rc=$?
    fi
    t1=$(now)
    if [[ $rc != 0 ]]; then
        echo "BUILD FAILED (exit $rc): $RBUILD $*" >&2
        tail -n 40 "$logf" >&2
        exit 1
    fi
    RUN_WALL=$(seconds_between "$t0" "$t1")
    if [[ -n "$GNU_TIME" ]]; then
        RUN_RSS=$(awk '/^[0-9]+$/ { v = $1 } END { printf "%.0f", v / 1024 }' "$rssf")
    else
        RUN_RSS="-"
    fi
    # Parse --progress=plain: "#N [i/n] INSTR" headers, "#N CACHED" / "#N DONE 1.2s" trailers.
    local parsed
    parsed=$(awk '
        /^#[0-9]+ \[[0-9]+\/[0-9]+\] / { id = $1; sub(/^#[0-9]+ /, ""); name[id] = $0; order[++n] = id; next }
        /^#[0-9]+ \[internal\] load build context/ { ctx = $1; next }
        /^#[0-9]+ exporting to / { ex = $1; next }
        /^#[0-9]+ CACHED$/ { cached[$1] = 1; next }
        /^#[0-9]+ DONE [0-9.]+s$/ { t = $3; sub(/s$/, "", t); done[$1] = t; next }
        END {
            c = 0; un = ""
            for (i = 1; i <= n; i++) {
                if (order[i] in cached) c++
                else un = un (un == "" ? "" : "; ") name[order[i]]
            }
            printf "%d/%d\t%s\t%s\t%s\n", c, n, (un == "" ? "-" : un),
                (ctx in done ? done[ctx] : "-"), (ex in done ? done[ex] : "-")
        }' "$logf")
    IFS=$'\t' read -r RUN_CACHE RUN_UNCACHED RUN_CTX RUN_EXPORT <<<"$parsed"
}

# bench NAME EXPECT PREP ARGS...: REPS runs of `rbuild ARGS`, each after `PREP <rep>` (untimed).
# EXPECT is "all" (every step CACHED), "none" (no step CACHED) or the number of CACHED steps.
# ARGS may contain @OUT@, replaced by a fresh output path each run (removed before the run).
bench() {
    local name=$1 expect=$2 prep=$3; shift 3
    local walls=() rss_max=0 caches="" unc="" ctxs=() exps=() r slug
    slug=$(tr -c 'A-Za-z0-9' _ <<<"$name")
    for ((r = 1; r <= REPS; r++)); do
        $prep "$r"
        local args=() a out="$T/out/$slug.$r"
        rm -rf "$out"
        for a in "$@"; do args+=("${a//@OUT@/$out}"); done
        run_once "$T/logs/$slug.$r.log" "${args[@]}"
        walls+=("$RUN_WALL"); ctxs+=("$RUN_CTX"); exps+=("$RUN_EXPORT")
        [[ "$RUN_RSS" != "-" ]] && ((RUN_RSS > rss_max)) && rss_max=$RUN_RSS
        local outsize="-"
        [[ -e "$out" ]] && outsize=$(du -sm "$out" | cut -f1)
        printf '  %-32s rep %d: %7.2fs  rss %5s MB  cached %-5s ctx %5s s  export %5s s  out %s MB\n' \
            "$name" "$r" "$RUN_WALL" "$RUN_RSS" "$RUN_CACHE" "$RUN_CTX" "$RUN_EXPORT" "$outsize"
        local c=${RUN_CACHE%/*} n=${RUN_CACHE#*/} ok=1
        case $expect in
            all) [[ $c == "$n" ]] || ok=0 ;;
            none) [[ $c == 0 ]] || ok=0 ;;
            *) [[ $c == "$expect" ]] || ok=0 ;;
        esac
        if [[ $ok == 0 ]]; then
            ISSUES+=("$name (rep $r): cached $RUN_CACHE, expected $expect; not cached: $RUN_UNCACHED"$'\n'"    log: $T/logs/$slug.$r.log"$'\n'"    repro: $RBUILD ${args[*]}")
        fi
        [[ $caches == *"$RUN_CACHE"* ]] || caches+="${caches:+,}$RUN_CACHE"
        [[ $RUN_UNCACHED == "-" || $unc == *"$RUN_UNCACHED"* ]] || unc+="${unc:+ | }$RUN_UNCACHED"
        rm -rf "$out"
    done
    local med all
    med=$(printf '%s\n' "${walls[@]}" | median)
    all=$(printf '%s ' "${walls[@]}" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " " : ""), $i }')
    local ctxm expm
    ctxm=$(printf '%s\n' "${ctxs[@]}" | sort -g | sed -n "$(((${#ctxs[@]} + 1) / 2))p")
    expm=$(printf '%s\n' "${exps[@]}" | sort -g | sed -n "$(((${#exps[@]} + 1) / 2))p")
    ROWS+=("$name"$'\t'"$med"$'\t'"$all"$'\t'"$rss_max"$'\t'"$caches"$'\t'"$ctxm"$'\t'"$expm"$'\t'"${unc:--}")
}

noprep() { :; }
settle() { sync; }

# baseline NAME PREP CMD...: REPS timed runs of a plain command (a reference for how fast this
# machine's disk is at that moment: the cold figures move with it)
baseline() {
    local name=$1 prep=$2; shift 2
    local walls=() r t0 t1
    for ((r = 1; r <= REPS; r++)); do
        $prep "$r"
        t0=$(now)
        "$@"
        t1=$(now)
        walls+=("$(seconds_between "$t0" "$t1")")
        printf '  %-32s rep %d: %7.2fs\n' "$name" "$r" "${walls[-1]}"
    done
    local med all
    med=$(printf '%s\n' "${walls[@]}" | median)
    all=$(printf '%s ' "${walls[@]}" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " " : ""), $i }')
    ROWS+=("$name"$'\t'"$med"$'\t'"$all"$'\t'"-"$'\t'"-"$'\t'"-"$'\t'"-"$'\t'"-")
}

mkdir -p "$T/logs" "$T/out"
echo "rbuild: $RBUILD ($("$RBUILD" --version 2>/dev/null || echo '?'))"
echo "machine: $(machine_line); temp dir $T; $REPS repetitions"

# ================================================================ 1. 50,000 files / 200 MB
log "1. generating the 50,000-file context"
CTX=$T/tree/ctx
mkdir -p "$T/tree"
python3 "$here/gen_tree.py" "$CTX" "$N_FILES" "$TREE_BYTES"
sync
FILES=$T/tree/files.txt
ONE=$(sed -n "$((N_FILES * 3 / 10 + 1))p" "$FILES")     # a3/...: copied alone
CHANGED=$(sed -n "$((N_FILES * 97 / 100 + 1))p" "$FILES") # a9/...: changed in 1d
printf 'FROM scratch\nCOPY %s /one.dat\nCOPY a0 /a0\nCOPY . /tree\n' "$ONE" >"$T/tree/Dockerfile"
ROOT1=$T/root1
B1=(--root "$ROOT1" --progress=plain -f "$T/tree/Dockerfile")

# A new root for every cold build, the old ones deleted only at exit: deleting 50,000 files right
# before a timed run slows that run down (ext4 mounted with discard here), which is not rbuild's cost.
fresh_root1() { mkdir "$T/root1.$1"; ln -sfn "root1.$1" "$ROOT1"; sync; }
# 100 files spread over the whole tree (every 500th), mtime only.
touch_100() { awk 'NR % 500 == 1' "$FILES" | (cd "$CTX" && xargs touch); }
# One file outside a0/ and not /one.dat: only `COPY . /tree` should run again.
# (new content every time, so that no run can reuse an earlier layer)
CHANGE_N=0
change_one() { CHANGE_N=$((CHANGE_N + 1)); printf 'changed content %d\n' "$CHANGE_N" >"$CTX/$CHANGED"; }

log "1a. cp -r of the context (once, a reference for the disk), cold build (fresh --root each rep, -o type=oci)"
REPS=1 baseline "cp -r context (reference)" settle cp -r "$CTX" "$T/cp-dest"
bench "50k cold, -o oci" none fresh_root1 "${B1[@]}" -o "type=oci,dest=@OUT@" "$CTX"
log "1b. no-op rebuild"
bench "50k no-op, no -o" all noprep "${B1[@]}" "$CTX"
bench "50k no-op, -o oci" all noprep "${B1[@]}" -o "type=oci,dest=@OUT@" "$CTX"
log "1c. rebuild after touching 100 files (mtime only)"
bench "50k touch 100, no -o" all touch_100 "${B1[@]}" "$CTX"
bench "50k touch 100, -o oci" all touch_100 "${B1[@]}" -o "type=oci,dest=@OUT@" "$CTX"
log "1d. rebuild after changing one file ($CHANGED): only COPY . /tree runs again"
bench "50k change 1, no -o" 2 change_one "${B1[@]}" "$CTX"
bench "50k change 1, -o oci" 2 change_one "${B1[@]}" -o "type=oci,dest=@OUT@" "$CTX"
# (nothing deleted here: deleting ~500,000 files takes a while and slows the runs around it;
# the exit trap removes the lot)

# ================================================================ 2. a 1 GiB layer
log "2. ${BIG_MB} MiB of random data"
mkdir -p "$T/big/ctx"
head -c "$((BIG_MB << 20))" /dev/urandom >"$T/big/ctx/big.bin"
printf 'FROM scratch\nCOPY big.bin /big.bin\n' >"$T/big/Dockerfile"
ROOT2=$T/root2
B2=(--root "$ROOT2" --progress=plain -f "$T/big/Dockerfile")
fresh_root2() { rm -rf "$ROOT2"; sync; }
# a fresh root holding the built (uncompressed) layer, so that the next run compresses it
cold_big() { fresh_root2; run_once "$T/logs/big-prep.log" "${B2[@]}" "$T/big/ctx"; }
bench "1GiB cold, no -o" none fresh_root2 "${B2[@]}" "$T/big/ctx"
bench "1GiB no-op, no -o" all noprep "${B2[@]}" "$T/big/ctx"
# first export of the cached layer with each compression (fresh cache each rep), then the
# same export again (the compressed blob may be cached by then)
for comp in gzip zstd uncompressed; do
    bench "1GiB export $comp (first)" all cold_big "${B2[@]}" -o "type=oci,dest=@OUT@,compression=$comp" "$T/big/ctx"
    bench "1GiB export $comp (again)" all noprep "${B2[@]}" -o "type=oci,dest=@OUT@,compression=$comp" "$T/big/ctx"
done

# ================================================================ table
echo
echo "rbuild benchmark: $REPS reps each; wall = median (all reps), seconds; rss = max peak RSS, MB;"
echo "ctx / export = median of the 'load build context' and 'exporting' step times from --progress=plain"
echo
{
    printf 'scenario\twall\treps\trss\tcached\tctx\texport\tnot cached\n'
    printf '%s\n' "${ROWS[@]}"
} | column -t -s $'\t'
echo
if ((${#ISSUES[@]})); then
    echo "UNEXPECTED CACHE STATUS (${#ISSUES[@]}):"
    printf '  %s\n' "${ISSUES[@]}"
    [[ "${BENCH_KEEP:-}" == 1 ]] || echo "  (rerun with BENCH_KEEP=1 to keep the context, root and logs)"
else
    echo "cache status: as expected on every run"
fi
