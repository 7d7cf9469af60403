#!/usr/bin/env bash
# Registry benchmark: pulling a ~100 MB image into an empty state root, and the same build
# again with the image already in the store (no download). A real distribution registry
# (Debian's docker-registry) runs on 127.0.0.1; the image is pushed to it by rbuild itself.
# Prints figures; asserts only that the builds succeed.
#
#   benches/pull.sh                 # builds rbuild --release first
#   RBUILD=/path/to/rbuild benches/pull.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${RBUILD:-}" ]; then
    (cd "$here" && cargo build --release --quiet)
    RBUILD="$here/target/release/rbuild"
fi
[ -x /usr/bin/docker-registry ] || { echo "install Debian's docker-registry package" >&2; exit 1; }
work=$(mktemp -d)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
EOF
/usr/bin/docker-registry serve "$work/registry.yml" > /dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
printf '[registry."127.0.0.1:%s"]\nhttp = true\n' "$port" > "$work/config.toml"

# A ~100 MB image of four layers (random data: compression cannot shrink it).
mkdir -p "$work/image"
for i in 1 2 3 4; do head -c 25M /dev/urandom > "$work/image/part$i"; done
printf 'FROM scratch\nCOPY part1 /\nCOPY part2 /\nCOPY part3 /\nCOPY part4 /\n' > "$work/image/Dockerfile"
"$RBUILD" --root "$work/push-root" --config "$work/config.toml" --progress=quiet \
    --push -t "127.0.0.1:$port/bench/big:1" "$work/image"

mkdir -p "$work/consumer"
printf 'FROM 127.0.0.1:%s/bench/big:1\nCOPY Dockerfile /built-on-top\n' "$port" > "$work/consumer/Dockerfile"

seconds() { date +%s.%N; }
measure() {
    local label=$1; shift
    local start end
    start=$(seconds)
    "$@" > /dev/null 2>&1
    end=$(seconds)
    printf '%-48s %8.3f s\n' "$label" "$(echo "$end - $start" | bc -l)"
}
echo "rbuild: $RBUILD"
for rep in 1 2 3; do
    measure "pull 100 MB into an empty root (rep $rep)" \
        "$RBUILD" --root "$work/root-$rep" --config "$work/config.toml" --progress=plain "$work/consumer"
done
measure "same build, image in the store" \
    "$RBUILD" --root "$work/root-1" --config "$work/config.toml" --progress=plain "$work/consumer"
measure "same build with --pull (resolve again)" \
    "$RBUILD" --root "$work/root-1" --config "$work/config.toml" --pull --progress=plain "$work/consumer"
