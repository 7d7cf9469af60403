#!/usr/bin/env bash
# Writes the OCI image layout of `busybox:latest` that rbuild's end-to-end tests build on
# (tests/integration/images.rs runs this very script and caches its output under
# target/test-images/).
#
#   testdata/images/make-busybox.sh DEST     # DEST must not exist or be empty
#   testdata/images/make-busybox.sh --version
#
# The image: /bin/busybox from Debian's busybox-static (the installed package, else the
# candidate fetched with `apt-get download`, the system left as it is), a symlink per applet in
# /bin, /etc/passwd and /etc/group (root, nobody, app 1000:1000, staff 50 with app as member),
# /tmp 1777, /root 0700, /home/app owned by 1000:1000, PATH, CMD ["sh"]. Only rbuild builds it:
# `FROM scratch` + COPY. Layer and image digests depend only on the busybox binary and this
# recipe (SOURCE_DATE_EPOCH, rewrite-timestamp=true).
#
# RBUILD names the rbuild binary (default: target/debug/rbuild, built with cargo when missing).
# Use it with: rbuild --build-context busybox=oci-layout://DEST:latest ...
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The version of busybox-static this script uses: the installed one, else apt's candidate.
busybox_version() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Status} ${Version}' busybox-static 2>/dev/null || true)
    if [[ $status == "installed "* ]]; then
        echo "${status#installed }"
        return
    fi
    local candidate
    candidate=$(apt-cache show --no-all-versions busybox-static 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
    if [[ -z $candidate ]]; then
        echo "make-busybox.sh: busybox-static is neither installed nor known to apt (run apt-get update)" >&2
        return 1
    fi
    echo "$candidate"
}

# Copies the busybox-static binary to $1.
fetch_busybox() {
    local target=$1 status
    status=$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null || true)
    if [[ $status == installed ]]; then
        local installed
        installed=$(dpkg-query -L busybox-static | grep -E '/bin/busybox$' | head -n 1)
        cp "$installed" "$target"
        return
    fi
    local download=$work/download
    mkdir -p "$download"
    (cd "$download" && apt-get download busybox-static >&2)
    dpkg-deb -x "$download"/busybox-static_*.deb "$download/x"
    cp "$(find "$download/x" -path '*bin/busybox' -type f | head -n 1)" "$target"
}

if [[ ${1:-} == --version ]]; then
    busybox_version
    exit
fi
if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: $0 DEST | --version" >&2
    exit 2
fi
dest=$1
if [[ -e $dest && -n $(ls -A "$dest") ]]; then
    echo "make-busybox.sh: $dest exists and is not empty" >&2
    exit 1
fi

rbuild=${RBUILD:-$repo/target/debug/rbuild}
if [[ -z ${RBUILD:-} && ! -x $rbuild ]]; then
    (cd "$repo" && cargo build --bin rbuild >&2)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/make-busybox.XXXXXX")
trap 'rm -rf "$work"' EXIT
ctx=$work/ctx
rootfs=$ctx/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/home" "$rootfs/root" "$rootfs/tmp" "$ctx/home/app"

fetch_busybox "$ctx/busybox"
chmod 0755 "$ctx/busybox"
"$ctx/busybox" --list | LC_ALL=C sort | while read -r applet; do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
[[ -L $rootfs/bin/sh ]] || { echo "make-busybox.sh: this busybox has no sh applet" >&2; exit 1; }
install -m 0644 "$here/busybox/passwd" "$rootfs/etc/passwd"
install -m 0644 "$here/busybox/group" "$rootfs/etc/group"
chmod 0755 "$rootfs" "$rootfs/bin" "$rootfs/etc" "$rootfs/home" "$ctx/home/app"
chmod 0700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200} "$rbuild" build \
    --root "$work/state" \
    --progress=plain \
    -f "$here/busybox/Dockerfile" \
    -o "type=oci,dest=$dest,tar=false,name=busybox:latest,rewrite-timestamp=true" \
    "$ctx"
