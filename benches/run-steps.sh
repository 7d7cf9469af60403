#!/usr/bin/env bash
# RUN step benchmark: per-step overhead of 30 trivial RUN steps (cold and cached) and four
# independent `RUN sleep 2` stages built in parallel. Prints figures; asserts only that the
# builds succeed. Uses the busybox test image (testdata/images/make-busybox.sh).
#
#   benches/run-steps.sh            # builds rbuild --release first
#   RBUILD=/path/to/rbuild benches/run-steps.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
use_rbuild "$repo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
RBUILD="$RBUILD" "$repo/testdata/images/make-busybox.sh" "$work/busybox" > /dev/null 2>&1
context="busybox=oci-layout://$work/busybox:latest"

mkdir -p "$work/steps"
{
    echo "FROM busybox"
    for i in $(seq 1 30); do echo "RUN echo step-$i > /step-$i"; done
} > "$work/steps/Dockerfile"

mkdir -p "$work/parallel"
{
    for stage in a b c d; do
        echo "FROM busybox AS $stage"
        echo "RUN sleep 2 && echo $stage > /$stage"
    done
    echo "FROM scratch"
    for stage in a b c d; do echo "COPY --from=$stage /$stage /$stage"; done
} > "$work/parallel/Dockerfile"


echo "rbuild: $RBUILD"
for mode in overlay copy; do
    root="$work/root-$mode"
    export RBUILD_SNAPSHOTTER=$mode
    measure "30 RUN steps, cold ($mode)" "$RBUILD" --root "$root" --progress=plain --build-context "$context" "$work/steps"
    measure "30 RUN steps, cached ($mode)" "$RBUILD" --root "$root" --progress=plain --build-context "$context" "$work/steps"
    measure "30 RUN steps, --no-cache ($mode)" "$RBUILD" --root "$root" --no-cache --progress=quiet --build-context "$context" "$work/steps"
    printf '%-48s %8.1f ms\n' "  per step ($mode)" "$(awk -v s="$ELAPSED" 'BEGIN { print s * 1000 / 30 }')"
    measure "4 parallel stages of sleep 2 ($mode)" "$RBUILD" --root "$root" --no-cache --progress=plain --build-context "$context" "$work/parallel"
done
