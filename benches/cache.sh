#!/usr/bin/env bash
# Shared build cache benchmark: the round trip of --cache-to / --cache-from between two state
# roots standing for two CI machines. A real distribution registry (Debian's docker-registry)
# runs on 127.0.0.1; the busybox test image (testdata/images/make-busybox.sh) is pushed to it
# by rbuild itself and is the base of both stages.
#
#   benches/cache.sh                # builds rbuild --release first
#   RBUILD=/path/to/rbuild benches/cache.sh
#
# Environment:
#   RBUILD         the binary to measure (default: build it with cargo)
#   DATA_MB        random data in the context, MiB, spread over 4 files (default 100)
#   BENCH_TMPDIR   where the temp dir goes (default $TMPDIR or /tmp); needs ~2 GB free
#   BENCH_KEEP=1   keep the temp dir (logs of every run, roots, cache, registry storage)
#
# The context: DATA_MB of random data (compression cannot shrink it) in data/part1..4 and a
# small src.txt. The Dockerfile has a builder stage (COPY the data, RUN producing a blob of
# half of it, COPY src.txt, RUN producing a small report from it) whose blob and report the
# final stage copies, plus src.txt itself: 8 steps (the FROM of both stages is one step).
#
# Every run below uses a fresh --root unless said otherwise, once each (not repeated: a second
# push of the same cache finds its blobs in the registry already):
#   1. machine A: cold build, no --cache-to (root C, the reference for the export's cost), then
#      the same cold build with --cache-to type=registry,mode=max (root A)
#   2. machine B: the context copied elsewhere, --cache-from the registry, -o type=oci: every
#      step CACHED
#   3. the same round trip through a type=local cache directory (cold build exporting to the
#      directory, then a fresh root importing from it with -o type=oci)
#   4. src.txt changed on machine B: --cache-from the registry in a fresh root (a new CI
#      machine: the data steps and the blob come from the cache, 4 steps run), and on
#      machine B's root of run 2 (its own store holds the rest)
# Each run reports wall time, peak RSS (GNU time), the steps CACHED / all steps parsed from
# --progress=plain, the times of the cache import / export / image export steps, and what it
# wrote. A cache status other than the expected one is flagged at the end.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
DATA_MB=${DATA_MB:-100}

. "$here/lib.sh"

# ---------------------------------------------------------------- tools
use_rbuild "$repo"
use_gnu_time

# ---------------------------------------------------------------- temp dir, registry
base=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
T=$(mktemp -d "$base/rbuild-cache-bench.XXXXXX")
cleanup() {
    stop_registry
    if [[ "${BENCH_KEEP:-}" == 1 ]]; then
        echo "kept $T" >&2
    else
        rm -rf "$T"
    fi
    echo "(whole script ${SECONDS}s)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_registry "$T/registry"
CONFIG=$REGISTRY_CONFIG
REG=127.0.0.1:$REGISTRY_PORT
CACHE_REF=$REG/bench/cache:main

# ---------------------------------------------------------------- measuring
ROWS=()        # table rows, tab-separated
ISSUES=()      # unexpected cache status
RUN_LOG="" RUN_WALL="" RUN_RSS="" RUN_CACHE="" RUN_UNCACHED="" RUN_IMPORT="" RUN_CEXPORT="" RUN_EXPORT=""

# run NAME EXPECT ARGS...: one `rbuild ARGS` run, its log in $T/logs. EXPECT: "all" (every step
# CACHED), "none", or the number of CACHED steps. Prints a line and adds a table row.
run() {
    local name=$1 expect=$2; shift 2
    local slug logf rc=0 t0 t1
    slug=$(printf '%s' "$name" | tr -c 'A-Za-z0-9' _)
    logf=$T/logs/$slug.log
    RUN_LOG=$logf
    t0=$(now)
    if [[ -n "$GNU_TIME" ]]; then
        "$GNU_TIME" -f %M -o "$logf.rss" "$RBUILD" "$@" >"$logf" 2>&1 || rc=$?
    else
        "$RBUILD" "$@" >"$logf" 2>&1 || rc=$?
    fi
    t1=$(now)
    if [[ $rc != 0 ]]; then
        echo "BUILD FAILED (exit $rc): $RBUILD $*" >&2
        tail -n 40 "$logf" >&2
        exit 1
    fi
    RUN_WALL=$(seconds_between "$t0" "$t1" 2)
    RUN_RSS="-"
    [[ -n "$GNU_TIME" ]] && RUN_RSS=$(awk '/^[0-9]+$/ { v = $1 } END { printf "%.0f", v / 1024 }' "$logf.rss")
    # --progress=plain: "#N [stage i/n] INSTR" headers (repeated when steps interleave),
    # "#N CACHED" / "#N DONE 1.2s" trailers; the import, cache export and image export steps.
    local parsed
    parsed=$(awk '
        /^#[0-9]+ \[[^]]*[0-9]+\/[0-9]+\] / { id = $1; if (!(id in name)) { sub(/^#[0-9]+ /, ""); name[id] = $0; order[++n] = id }; next }
        /^#[0-9]+ importing cache/ { im[$1] = 1; next }
        /^#[0-9]+ exporting cache/ { ce[$1] = 1; next }
        /^#[0-9]+ exporting to / { ex[$1] = 1; next }
        /^#[0-9]+ CACHED$/ { cached[$1] = 1; next }
        /^#[0-9]+ DONE [0-9.]+s$/ { t = $3; sub(/s$/, "", t); done[$1] = t; next }
        function total(set,   id, s, any) { s = 0; any = 0; for (id in set) if (id in done) { s += done[id]; any = 1 }; return any ? sprintf("%.2f", s) : "-" }
        END {
            c = 0; un = ""
            for (i = 1; i <= n; i++) {
                if (order[i] in cached) c++
                else { match(name[order[i]], /^\[[^]]*\]/); un = un (un == "" ? "" : " ") substr(name[order[i]], RSTART, RLENGTH) }
            }
            printf "%d/%d\t%s\t%s\t%s\t%s\n", c, n, (un == "" ? "-" : un), total(im), total(ce), total(ex)
        }' "$logf")
    IFS=$'\t' read -r RUN_CACHE RUN_UNCACHED RUN_IMPORT RUN_CEXPORT RUN_EXPORT <<<"$parsed"
    printf '  %-40s %7.2fs  rss %5s MB  cached %-5s import %5s s  cache export %5s s  image export %5s s\n' \
        "$name" "$RUN_WALL" "$RUN_RSS" "$RUN_CACHE" "$RUN_IMPORT" "$RUN_CEXPORT" "$RUN_EXPORT"
    local c=${RUN_CACHE%/*} n=${RUN_CACHE#*/} ok=1
    case $expect in
        all) [[ $c == "$n" && $n -gt 0 ]] || ok=0 ;;
        none) [[ $c == 0 ]] || ok=0 ;;
        *) [[ $c == "$expect" ]] || ok=0 ;;
    esac
    [[ $ok == 1 ]] || ISSUES+=("$name: cached $RUN_CACHE, expected $expect; not cached: $RUN_UNCACHED"$'\n'"    log: $logf"$'\n'"    repro: $RBUILD $*")
    ROWS+=("$name"$'\t'"$RUN_WALL"$'\t'"$RUN_RSS"$'\t'"$RUN_CACHE"$'\t'"$expect"$'\t'"$RUN_IMPORT"$'\t'"$RUN_CEXPORT"$'\t'"$RUN_EXPORT"$'\t'"$RUN_UNCACHED")
}

size_mb() { du -sm "$1" | cut -f1; }
# the steps of the last run: CACHED, or the DONE time of a step that ran
step_lines() {
    awk '
        /^#[0-9]+ \[[^]]*[0-9]+\/[0-9]+\] / { id = $1; if (!(id in name)) { sub(/^#[0-9]+ /, ""); name[id] = $0; order[++n] = id }; next }
        /^#[0-9]+ CACHED$/ { st[$1] = "CACHED"; next }
        /^#[0-9]+ DONE [0-9.]+s$/ { st[$1] = "ran " $3; next }
        END { for (i = 1; i <= n; i++) printf "      %-10s %s\n", st[order[i]], substr(name[order[i]], 1, 90) }' "$RUN_LOG"
}

mkdir -p "$T/logs" "$T/out"
echo "rbuild: $RBUILD ($("$RBUILD" --version 2>/dev/null || echo '?'))"
echo "machine: $(machine_line); temp dir $T; registry $REG"

# ---------------------------------------------------------------- base image, context
log "base image: busybox (make-busybox.sh), pushed to $REG/bench/busybox:1 by rbuild"
RBUILD="$RBUILD" "$repo/testdata/images/make-busybox.sh" "$T/busybox" >"$T/logs/make-busybox.log" 2>&1 \
    || { echo "make-busybox.sh failed:" >&2; tail -n 20 "$T/logs/make-busybox.log" >&2; exit 1; }
mkdir -p "$T/push"
echo 'FROM busybox' >"$T/push/Dockerfile"
"$RBUILD" --root "$T/root-push" --config "$CONFIG" --progress=plain \
    --build-context "busybox=oci-layout://$T/busybox:latest" \
    --push -t "$REG/bench/busybox:1" "$T/push" >"$T/logs/push-base.log" 2>&1 \
    || { echo "pushing the base failed:" >&2; tail -n 20 "$T/logs/push-base.log" >&2; exit 1; }
rm -rf "$T/root-push"

log "context: $DATA_MB MiB of random data in 4 files and src.txt"
CTX_A=$T/machine-a/src/app
mkdir -p "$CTX_A/data"
for i in 1 2 3 4; do head -c "$((DATA_MB * 1024 * 1024 / 4))" /dev/urandom >"$CTX_A/data/part$i"; done
printf 'int main(void) { return 0; }\n' >"$CTX_A/src.txt"
cat >"$CTX_A/Dockerfile" <<EOF
FROM $REG/bench/busybox:1 AS builder
COPY data /data
RUN mkdir /out && cat /data/part1 /data/part2 > /out/blob && sha256sum /data/* > /out/sums
COPY src.txt /src/src.txt
RUN wc -c /src/src.txt | cat - /out/sums > /out/report

FROM $REG/bench/busybox:1
COPY --from=builder /out/blob /app/blob
COPY --from=builder /out/report /app/report
COPY src.txt /app/src.txt
EOF
# machine B: the same sources at another path
CTX_B=$T/machine-b/checkout/app
mkdir -p "$(dirname "$CTX_B")"
cp -a "$CTX_A" "$CTX_B"
sync
echo "  context $(size_mb "$CTX_A") MB; 8 steps: FROM, COPY data, RUN blob, COPY src.txt, RUN report, COPY --from blob, COPY --from report, COPY src.txt"

A=(--config "$CONFIG" --progress=plain)

# ---------------------------------------------------------------- 1. machine A, cold
log "1. machine A: cold build without and with --cache-to type=registry,mode=max"
run "A cold, no cache-to (root C)" none --root "$T/root-c" "${A[@]}" "$CTX_A"
run "A cold, cache-to registry max" none --root "$T/root-a" "${A[@]}" \
    --cache-to "type=registry,ref=$CACHE_REF,mode=max" "$CTX_A"
A_COLD=$RUN_WALL C_COLD=${ROWS[0]#*$'\t'} C_COLD=${C_COLD%%$'\t'*}
echo "  registry storage after the push: $(size_mb "$T/registry/storage") MB"

# ---------------------------------------------------------------- 2. machine B, registry
log "2. machine B: fresh root, --cache-from type=registry, -o type=oci"
run "B cache-from registry, -o oci" all --root "$T/root-b" "${A[@]}" \
    --cache-from "type=registry,ref=$CACHE_REF" -o "type=oci,dest=$T/out/b.tar" "$CTX_B"
echo "  OCI archive $(size_mb "$T/out/b.tar") MB; steps:"
step_lines

# ---------------------------------------------------------------- 3. local directory
log "3. type=local: cold build exporting to a directory, a fresh root importing from it"
run "A cold, cache-to local max" none --root "$T/root-a-local" "${A[@]}" \
    --cache-to "type=local,dest=$T/cache-dir,mode=max" "$CTX_A"
A_LOCAL=$RUN_WALL
echo "  cache directory $(size_mb "$T/cache-dir") MB"
run "B cache-from local, -o oci" all --root "$T/root-b-local" "${A[@]}" \
    --cache-from "type=local,src=$T/cache-dir" -o "type=oci,dest=$T/out/b-local.tar" "$CTX_B"

# ---------------------------------------------------------------- 4. partial hit
# Expected: FROM, COPY data, RUN blob and COPY --from=builder /out/blob CACHED (the blob's content
# is unchanged; BuildKit keys COPY --from on the content of the copied paths), 4 steps run.
log "4. src.txt changed on machine B: FROM, COPY data, RUN blob, COPY --from blob cached; 4 steps run"
printf 'int main(void) { return 1; }\n' >"$CTX_B/src.txt"
run "B changed src, fresh root, registry" 4 --root "$T/root-b-new" "${A[@]}" \
    --cache-from "type=registry,ref=$CACHE_REF" -o "type=oci,dest=$T/out/b-new.tar" "$CTX_B"
step_lines
run "B changed src, root of run 2" 4 --root "$T/root-b" "${A[@]}" \
    --cache-from "type=registry,ref=$CACHE_REF" -o "type=oci,dest=$T/out/b-2.tar" "$CTX_B"

# ---------------------------------------------------------------- table
echo
echo "rbuild shared cache benchmark: one run each, wall seconds, rss = peak RSS MB (GNU time);"
echo "import / cache export / image export = DONE times of those steps in --progress=plain"
echo
{
    printf 'scenario\twall\trss\tcached\texpected\timport\tcache-export\timage-export\tnot cached\n'
    printf '%s\n' "${ROWS[@]}"
} | column -t -s $'\t'
echo
awk -v a="$A_COLD" -v l="$A_LOCAL" -v c="$C_COLD" 'BEGIN {
    printf "cost of --cache-to on the cold build (wall minus the cold build without it): registry %+.2f s, local %+.2f s\n", a - c, l - c }'
if ((${#ISSUES[@]})); then
    echo "UNEXPECTED CACHE STATUS (${#ISSUES[@]}):"
    printf '  %s\n' "${ISSUES[@]}"
    [[ "${BENCH_KEEP:-}" == 1 ]] || echo "  (rerun with BENCH_KEEP=1 to keep the logs, roots, cache and registry)"
else
    echo "cache status: as expected on every run"
fi
