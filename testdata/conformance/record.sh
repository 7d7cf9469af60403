#!/usr/bin/env bash
# Records BuildKit's result for every conformance case (or the cases named as arguments) into
# CASE/expected/, with the oracle (../shared/tools/buildkit/oracle, a real BuildKit v0.32.2).
# Run as root from anywhere in the repository:
#
#   testdata/conformance/record.sh [CASE...]
#   testdata/conformance/record.sh --compare [CASE...]
#
# --compare records nothing: it runs `oracle compare` (BuildKit beside target/release/rbuild, rootfs
# as local trees and the image config) on each case and prints the cases that differ.
#
# It builds the busybox test image (testdata/images/make-busybox.sh, the same recipe the tests
# use), serves it from Debian's docker-registry on 127.0.0.1:$RECORD_PORT (default 5123) as
# docker.io's mirror, starts the oracle with that mirror (restarting it when it has another), and
# runs the ignored test `conformance::record`, which builds each case with BuildKit to a rootfs
# tar and an OCI archive and writes expected/rootfs.txt and expected/config.json (or
# expected/error.txt when BuildKit fails).
set -euo pipefail
compare=0
if [ "${1:-}" = --compare ]; then compare=1; shift; fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
oracle=${ORACLE:-$repo/../shared/tools/buildkit/oracle}
port=${RECORD_PORT:-5123}
[ -x "$oracle" ] || { echo "record.sh: no oracle at $oracle (set ORACLE)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "record.sh: run as root (the oracle's BuildKit needs it)" >&2; exit 1; }
for tool in docker-registry skopeo runc zstd jq; do
    command -v "$tool" >/dev/null || { echo "record.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/rbuild-record.XXXXXX)
cleanup() { [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cd "$repo"
cargo build --quiet --bin rbuild
RBUILD=$repo/target/debug/rbuild bash testdata/images/make-busybox.sh "$work/busybox" >/dev/null 2>&1

printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/registry" "$port" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$work/busybox:latest" "docker://127.0.0.1:$port/library/busybox:latest"

config=${ORACLE_DIR:-/tmp/rbuild-oracle}/buildkitd.toml
if [ -f "$config" ] && ! grep -q "\"127.0.0.1:$port\"" "$config"; then "$oracle" stop; fi
"$oracle" start --mirror "127.0.0.1:$port"
# BuildKit caches resolved tags: make it resolve busybox from this registry again.
"$oracle" buildctl prune --all >/dev/null

if [ $compare = 1 ]; then
    cargo build --quiet --release --bin rbuild
    # rbuild finds the mirror through its default config path, in a state root of its own.
    mkdir -p "$work/xdg/rbuild"
    printf '[registry."docker.io"]\nmirrors = ["127.0.0.1:%s"]\n[registry."127.0.0.1:%s"]\nhttp = true\n' "$port" "$port" \
        >"$work/xdg/rbuild/config.toml"
    names=("$@")
    [ ${#names[@]} -gt 0 ] || mapfile -t names < <(cd "$here" && ls -d */ | tr -d / | while read -r n; do [ -f "$n/Dockerfile" ] && echo "$n"; done)
    same=0; differ=()
    for name in "${names[@]}"; do
        case_dir=$work/cases/$name
        mkdir -p "$case_dir" && cp -a "$here/$name/." "$case_dir/" && rm -rf "$case_dir/expected" && mkdir -p "$case_dir/context"
        (cd "$case_dir" && if [ -f setup.sh ]; then sh -e setup.sh; fi)
        args=(); [ -f "$case_dir/args" ] && mapfile -t args < <(grep -v '^#' "$case_dir/args" | sed '/^$/d')
        if (cd "$case_dir" && XDG_CONFIG_HOME=$work/xdg RBUILD_ROOT=$work/state RBUILD=$repo/target/release/rbuild \
            "$oracle" compare -f Dockerfile "${args[@]}" context >"$work/$name.compare" 2>&1); then
            same=$((same + 1))
            # The oracle keeps its outputs; a case that agrees needs them no more.
            kept=$(sed -n 's/^logs and outputs: //p' "$work/$name.compare")
            case $kept in "${TMPDIR:-/tmp}"/oracle-compare.*) rm -rf "$kept" ;; esac
        else
            differ+=("$name"); echo "== $name"; cat "$work/$name.compare"
        fi
    done
    echo "oracle compare: $same of ${#names[@]} cases the same; differ: ${differ[*]:-none}"
    exit 0
fi

cases=$(IFS=,; echo "$*")
RBUILD_ORACLE=$oracle RBUILD_CONFORMANCE_CASES=${cases:-${RBUILD_CONFORMANCE_CASES:-}} \
    cargo test --quiet --test integration conformance::record -- --ignored --exact --nocapture
