#!/usr/bin/env bash
# Registry benchmark: pulling a ~100 MB image into an empty state root, and the same build
# again with the image already in the store (no download). A real distribution registry
# (Debian's docker-registry) runs on 127.0.0.1; the image is pushed to it by rbuild itself.
# Prints figures; asserts only that the builds succeed.
#
#   benches/pull.sh                 # builds rbuild --release first
#   RBUILD=/path/to/rbuild benches/pull.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
use_rbuild "$(cd "$here/.." && pwd)"
work=$(mktemp -d)
cleanup() { stop_registry; rm -rf "$work"; }
trap cleanup EXIT

start_registry "$work/registry"
port=$REGISTRY_PORT

# A ~100 MB image of four layers (random data: compression cannot shrink it).
mkdir -p "$work/image"
for i in 1 2 3 4; do head -c 25M /dev/urandom > "$work/image/part$i"; done
printf 'FROM scratch\nCOPY part1 /\nCOPY part2 /\nCOPY part3 /\nCOPY part4 /\n' > "$work/image/Dockerfile"
"$RBUILD" --root "$work/push-root" --config "$REGISTRY_CONFIG" --progress=quiet \
    --push -t "127.0.0.1:$port/bench/big:1" "$work/image"

mkdir -p "$work/consumer"
printf 'FROM 127.0.0.1:%s/bench/big:1\nCOPY Dockerfile /built-on-top\n' "$port" > "$work/consumer/Dockerfile"

echo "rbuild: $RBUILD"
for rep in 1 2 3; do
    measure "pull 100 MB into an empty root (rep $rep)" \
        "$RBUILD" --root "$work/root-$rep" --config "$REGISTRY_CONFIG" --progress=plain "$work/consumer"
done
measure "same build, image in the store" \
    "$RBUILD" --root "$work/root-1" --config "$REGISTRY_CONFIG" --progress=plain "$work/consumer"
measure "same build with --pull (resolve again)" \
    "$RBUILD" --root "$work/root-1" --config "$REGISTRY_CONFIG" --pull --progress=plain "$work/consumer"
