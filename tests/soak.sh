#!/usr/bin/env bash
# Soak test (issue 9): builders and a pruner share one state root for a while, under random
# kill -9 (of the process the user started, or of the whole tree) and SIGINT to the process
# group; then every output is checked against a reference build and leftovers are counted.
# Not part of `cargo test`: it runs for minutes and its figures go into notes.
#
#   tests/soak.sh [--rootless] [--minutes N] [--builders N]
#
# Run as root (it makes the busybox layout and, with --rootless, runs rbuild as the test user
# `rbuild-test` with a clean environment, as the end-to-end tests do). It prints one line per
# count and exits 1 when any of them is not zero:
#   wrong      builds that exited 0 with an output unlike the reference
#   failed     builds that failed without being killed or interrupted
#   tmp        entries left in the state root's tmp/ after a final build on the quiet root
#   shm        rbuild-* directories left in /dev/shm
#   cgroups    rbuild-* cgroups left under /sys/fs/cgroup
#   orphans    processes of a killed build still running 30 s after the kill
#   processes  rbuild processes left running
#   rowless    blobs and snapshots without a database row after the final build
set -euo pipefail

minutes=10
builders=4
rootless=0
while [ $# -gt 0 ]; do
    case $1 in
        --rootless) rootless=1 ;;
        --minutes) minutes=$2; shift ;;
        --builders) builders=$2; shift ;;
        *) echo "usage: $0 [--rootless] [--minutes N] [--builders N]" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "soak.sh: run as root" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --quiet --release --bin rbuild
rbuild=$repo/target/release/rbuild
work=$(mktemp -d /tmp/rbuild-soak.XXXXXX)
chmod 755 "$work"
RBUILD=$rbuild bash testdata/images/make-busybox.sh "$work/busybox" >/dev/null

user=rbuild-test
if [ $rootless = 1 ]; then
    id "$user" >/dev/null 2>&1 || useradd --create-home "$user"
    grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 --add-subgids 200000-265535 "$user"
fi

# Three projects: files and modes, a cache mount and a multi-stage COPY --from, whiteouts.
for name in files cache stages; do mkdir -p "$work/projects/$name"; done
printf 'hello\n' >"$work/projects/files/a.txt"
head -c 300000 /dev/urandom >"$work/projects/files/blob.bin"
cat >"$work/projects/files/Dockerfile" <<'EOF'
FROM busybox
COPY a.txt blob.bin /data/
RUN mkdir -p /out && for i in $(seq 1 200); do echo $i > /out/f$i; done && chmod 600 /out/f1 && ln -s f2 /out/link
RUN rm /out/f3 && sha256sum /data/blob.bin > /out/sum
EOF
cat >"$work/projects/cache/Dockerfile" <<'EOF'
FROM busybox
RUN --mount=type=cache,target=/cache,id=soak echo run >> /cache/log && mkdir /result && cp /bin/busybox /result/bb && sleep 1
RUN rm -rf /etc/group && echo done > /result/done
EOF
cat >"$work/projects/stages/Dockerfile" <<'EOF'
FROM busybox AS one
RUN mkdir /x && seq 1 5000 > /x/numbers && sleep 1
FROM busybox AS two
RUN mkdir /y && echo two > /y/two
FROM busybox
COPY --from=one /x /from-one
COPY --from=two /y /from-two
RUN cat /from-one/numbers | wc -l > /count
EOF
projects=(files cache stages)

if [ $rootless = 1 ]; then chown -R "$user:" "$work"; fi
home=$(getent passwd "$user" | cut -d: -f6)

# rbuild as the soak's user; the remaining arguments are rbuild's.
as_user() {
    if [ $rootless = 1 ]; then
        setpriv --reuid="$user" --regid="$user" --init-groups -- env -i HOME="$home" PATH=/usr/bin:/bin "$rbuild" "$@"
    else
        "$rbuild" "$@"
    fi
}

# A listing of an output directory that does not depend on when or by whom it was built.
listing() {
    (cd "$1" && find . -mindepth 1 -printf '%P %y %m %s %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

context_arg="busybox=oci-layout://$work/busybox:latest"
build() { # ROOT PROJECT DEST
    as_user build --root "$1" --progress=plain --build-context "$context_arg" -o "type=local,dest=$3" "$work/projects/$2"
}

echo "soak: references"
for project in "${projects[@]}"; do
    build "$work/reference-root" "$project" "$work/reference-$project" >"$work/reference-$project.log" 2>&1
    listing "$work/reference-$project" >"$work/reference-$project.list"
done

root=$work/root
mkdir -p "$work/counts"
if [ $rootless = 1 ]; then mkdir -p "$root" && chown "$user:" "$root" "$work/counts"; fi
end=$(( $(date +%s) + minutes * 60 ))

# Every process below PID.
descendants() {
    local children
    children=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
    for child in $children; do echo "$child"; descendants "$child"; done
}

# The PIDs given that are still running: a zombie waiting for its reaper has ended (this
# machine's init reaps reparented processes slowly).
running() {
    for process in "$@"; do
        local stat
        stat=$(cat "/proc/$process/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        [ "${stat%% *}" = Z ] || echo "$process"
    done
}

builder() { # NUMBER
    local n=0 killed status dest project delay
    while [ "$(date +%s)" -lt "$end" ]; do
        n=$((n + 1))
        project=${projects[$((RANDOM % ${#projects[@]}))]}
        dest=$work/out-$1-$n
        setsid bash -c "$(declare -f as_user build); rootless=$rootless user=$user home=$home rbuild=$rbuild work=$work context_arg=$context_arg build $root $project $dest" >"$dest.log" 2>&1 &
        local pid=$! action=$((RANDOM % 10)) tree
        killed=0
        if [ $action -lt 5 ]; then
            delay=$((RANDOM % 4000))
            sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
            if kill -0 "$pid" 2>/dev/null; then
                killed=1
                tree="$pid $(descendants "$pid")"
                case $action in
                    0|1) kill -9 "$pid" $(descendants "$pid" | head -1) 2>/dev/null || true ;;  # the process the user started
                    2|3) kill -STOP $tree 2>/dev/null || true; kill -9 $tree 2>/dev/null || true ;;
                    4) kill -INT -- "-$pid" 2>/dev/null || true ;;
                esac
            fi
        fi
        status=0
        { wait "$pid"; } 2>/dev/null || status=$?
        # What a kill left must stop by itself within 30 s (the build dies with the process the
        # user started); a process still there then is an orphan.
        if [ $killed = 1 ]; then
            local waited=0 alive
            while alive=$(running $tree) && [ -n "$alive" ] && [ $waited -lt 300 ]; do
                sleep 0.1; waited=$((waited + 1))
            done
            if [ -n "$alive" ]; then
                echo "orphan: $dest: $(for process in $alive; do tr '\0' ' ' </proc/"$process"/cmdline; echo; done)" >>"$work/counts/orphans"
            fi
        fi
        if [ $status = 0 ]; then
            if ! cmp -s <(listing "$dest") "$work/reference-$project.list"; then
                echo "wrong: $dest ($project)" >>"$work/counts/wrong"
            fi
        elif [ $killed = 0 ]; then
            echo "failed: $dest ($project), exit $status" >>"$work/counts/failed"
        fi
        rm -rf "$dest"
    done
}

pruner() {
    while [ "$(date +%s)" -lt "$end" ]; do
        sleep $((RANDOM % 8))
        local flags=(-f)
        [ $((RANDOM % 3)) = 0 ] && flags=(-a -f)
        setsid bash -c "$(declare -f as_user); rootless=$rootless user=$user home=$home rbuild=$rbuild as_user cache prune ${flags[*]} --root $root" >/dev/null 2>&1 &
        local pid=$!
        if [ $((RANDOM % 3)) = 0 ]; then
            sleep "0.$((RANDOM % 10))"
            kill -9 "$pid" $(descendants "$pid") 2>/dev/null || true
        fi
        { wait "$pid"; } 2>/dev/null || true
    done
}

echo "soak: $builders builders and a pruner for $minutes minutes on $root"
pids=()
for number in $(seq "$builders"); do builder "$number" & pids+=($!); done
pruner & pids+=($!)
wait "${pids[@]}"
sleep 2

echo "soak: final builds on the quiet root"
for project in "${projects[@]}"; do
    if build "$root" "$project" "$work/final-$project" >"$work/final-$project.log" 2>&1; then
        cmp -s <(listing "$work/final-$project") "$work/reference-$project.list" || echo "wrong: final $project" >>"$work/counts/wrong"
    else
        echo "failed: final $project" >>"$work/counts/failed"
    fi
done

count_lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
rowless=$(python3 - "$root" <<'EOF'
import os, sqlite3, sys
root = sys.argv[1]
db = sqlite3.connect(os.path.join(root, "db-v1.sqlite"))
blobs = {row[0].split(":", 1)[-1] for row in db.execute("SELECT digest FROM blob")}
layers = {row[0].split(":", 1)[-1] for row in db.execute("SELECT diff_id FROM layer")}
on_disk_blobs = set(os.listdir(os.path.join(root, "blobs-v1/sha256")))
on_disk_snapshots = set(os.listdir(os.path.join(root, "snapshots-v1")))
print(len(on_disk_blobs - blobs) + len(on_disk_snapshots - layers))
EOF
)
wrong=$(count_lines "$work/counts/wrong")
failed=$(count_lines "$work/counts/failed")
orphans=$(count_lines "$work/counts/orphans")
tmp=$(find "$root/tmp" -mindepth 1 -maxdepth 1 | wc -l)
shm=$(find /dev/shm -maxdepth 1 -name 'rbuild-*' -user "$([ $rootless = 1 ] && echo "$user" || echo root)" | wc -l)
cgroups=$(find /sys/fs/cgroup -maxdepth 3 -type d -name 'rbuild-[0-9]*' 2>/dev/null | wc -l)
processes=$({ pgrep -f "$rbuild" || true; pgrep -f "__run-step" || true; } | wc -l)
builds=$(find "$work" -maxdepth 1 -name 'out-*.log' | wc -l)
echo "soak: $builds builds ($([ $rootless = 1 ] && echo rootless || echo root)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for name in wrong failed orphans tmp shm cgroups processes rowless; do echo "$name ${!name}"; done
cat "$work/counts/"* 2>/dev/null | head -20
total=$((wrong + failed + orphans + tmp + shm + cgroups + processes + rowless))
if [ $total = 0 ]; then rm -rf "$work"; else echo "soak: kept $work"; fi
[ $total = 0 ]
