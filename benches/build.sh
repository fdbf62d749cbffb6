#!/usr/bin/env bash
# rbuild build against docker build (BuildKit) and buildah bud --layers, side by side in one
# run, on a generated context (~20,000 files, ~200 MB, multi-stage, RUN steps): a cold build,
# a warm rebuild with nothing changed, and a rebuild after one source file changed; then a
# cold build again with all three on one shared filesystem, each right after deleting its
# state of the same build before. Runs alternate between the builders (A B C A B C) and
# medians are reported.
#
#   benches/build.sh              # 3 rounds
#   RUNS=1 benches/build.sh       # 1 round
#   PAUSE=3 benches/build.sh      # seconds after `sync` before each timed build (10)
#   SHARED_SIZE=256G benches/build.sh  # size of the shared filesystem (64G)
#
# Each builder keeps its state on a filesystem of its own: a fresh ext4 (mke2fs defaults,
# journal included) on a loop device over a file, with a private dockerd whose data root is on
# docker's. Sharing one filesystem made each builder pay for the others' deletes: this
# machine's root filesystem has no journal, where ext4 skips inodes freed in the last five
# minutes when allocating (`recently_deleted`), so creating 20,000 files after another
# builder deleted as many took several times longer, and who paid depended on the order.
#
# That case is real (a CI machine's one disk, a cache pruned before a build), so it is measured
# too, fairly: a fourth ext4, made like this machine's root filesystem (no journal, mke2fs
# defaults otherwise), holds all three builders' state (rbuild's store, a second dockerd's
# data root, buildah's storage); each builds once to have something to delete, and each timed
# cold build comes PAUSE seconds after the builder deleted its own state of the same build
# (`rm -rf` of the store, `builder prune`, `rmi --all`), with the others' deletes before.
#
# Needs root (mount), buildah, dockerd, and scripts/test's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
docker=/usr/bin/docker
source benches/common.sh
need "$docker" dockerd buildah runc python3 busybox mkfs.ext4
build_rbuild

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rbuild-build-bench.XXXXXX")
cleanup() {
    stop_registry "$work"
    buildah --root "$work/buildah/root" --runroot "$work/buildah-run" rm --all >/dev/null 2>&1 || true
    buildah --root "$work/shared/buildah" --runroot "$work/shared-buildah-run" rm --all >/dev/null 2>&1 || true
    stop_dockerd "$work"
    stop_dockerd "$work/shared-docker"
    unmount_under "$work"
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
for tool in rbuild docker buildah; do make_ext4 "$tool" 8G; done
make_ext4 shared "${SHARED_SIZE:-64G}" -O ^has_journal
mkdir "$work/shared-docker"
start_dockerd "$work" "$work/docker/root"
start_dockerd "$work/shared-docker" "$work/shared/docker"
export DOCKER_HOST="unix://$work/docker.sock"

# The base every builder pulls: busybox, built by docker, served by rbuild serve.
base=$(start_registry_with_busybox "$work")

python3 benches/build/generate-context.py "$work/context"
context="$work/context"
echo "context: $(find "$context" -type f | wc -l) files, $(du -sm "$context" | cut -f1) MB"

# A cold build starts from nothing: rbuild on a new store of its own for the round, docker
# after `builder prune` (which also drops BuildKit's copy of the context), buildah after
# removing its images.
time_rbuild() { # STORE [--no-cache]
    local store=$1 s; shift
    s=$(now)
    RBUILD_ROOT="$store" "$bin" build --progress plain --network none -t bench/app:rbuild "$@" \
        --build-arg "BASE=$base" "$context" >"$work/rbuild.log" 2>&1 || { cat "$work/rbuild.log" >&2; exit 1; }
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
time_docker() { # [--no-cache]
    local s; s=$(now)
    DOCKER_BUILDKIT=1 "$docker" build --network=none -q -t bench/app:docker "$@" --build-arg "BASE=$base" "$context" \
        >"$work/docker.log" 2>&1 || { cat "$work/docker.log" >&2; exit 1; }
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
time_buildah() { # [--no-cache]
    local s; s=$(now)
    buildah --root "$buildah_root" --runroot "$buildah_run" bud --layers --quiet --runtime /usr/sbin/runc \
        --network=none --tls-verify=false -t bench/app:buildah "$@" --build-arg "BASE=$base" "$context" \
        >"$work/buildah.log" 2>&1 || { cat "$work/buildah.log" >&2; exit 1; }
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
rbuild_stores=$work/rbuild buildah_root=$work/buildah/root buildah_run=$work/buildah-run
reset_docker() {
    "$docker" rmi -f bench/app:docker >/dev/null 2>&1 || true
    "$docker" builder prune -af >/dev/null 2>&1 || true
}
reset_buildah() {
    buildah --root "$buildah_root" --runroot "$buildah_run" rmi --all --force >/dev/null 2>&1 || true
}
reset_caches() { reset_docker; reset_buildah; }
measure() { # TOOL ROUND [--no-cache]
    local tool=$1 round=$2; shift 2
    # Each run starts on a quiet disk: what the builder before it wrote is flushed first, so
    # that nobody is timed paying for the writeback of another's gigabyte.
    sync
    sleep "${PAUSE:-10}"
    case $tool in
        rbuild) time_rbuild "$rbuild_stores/store-$round" "$@" ;;
        *) "time_$tool" "$@" ;;
    esac
}

tools=(rbuild docker buildah)
declare -A cold warm change
for tool in "${tools[@]}"; do cold[$tool]=""; warm[$tool]=""; change[$tool]=""; done
for round in $(seq "$RUNS"); do
    # Rotate who goes first, so no builder always meets the disk in the same state.
    order=("${tools[@]:$(( (round - 1) % 3 ))}" "${tools[@]:0:$(( (round - 1) % 3 ))}")
    reset_caches
    for tool in "${order[@]}"; do cold[$tool]+="$(measure "$tool" "$round" --no-cache) "; done
    for tool in "${order[@]}"; do warm[$tool]+="$(measure "$tool" "$round") "; done
    # Content no cache has seen, even from an earlier run of this script.
    echo "// changed in round $round at $(now)" >>"$context/src/pkg07/mod03/file00287.rs"
    for tool in "${order[@]}"; do change[$tool]+="$(measure "$tool" "$round") "; done
    for tool in "${tools[@]}"; do
        echo "round $round (${order[*]}): $tool cold/warm/change $(awk '{print $NF}' <<<"${cold[$tool]}")" \
            "$(awk '{print $NF}' <<<"${warm[$tool]}") $(awk '{print $NF}' <<<"${change[$tool]}")"
    done
done

# The shared filesystem: docker through the second dockerd, buildah's storage and rbuild's
# stores on it, each in a directory of its own (ext4 spreads the directories at its root
# over the disk, which a store at ~/.local/share or /var/lib does not get). Each builder's
# first build there is not timed: it is the state the first timed one deletes.
export DOCKER_HOST="unix://$work/shared-docker/docker.sock"
rbuild_stores=$work/shared/rbuild buildah_root=$work/shared/buildah buildah_run=$work/shared-buildah-run
declare -A shared
for tool in "${tools[@]}"; do
    shared[$tool]=""
    measure "$tool" 0 --no-cache >/dev/null
done
for round in $(seq "$RUNS"); do
    order=("${tools[@]:$(( (round - 1) % 3 ))}" "${tools[@]:0:$(( (round - 1) % 3 ))}")
    for tool in "${order[@]}"; do
        case $tool in
            rbuild) rm -rf "$rbuild_stores/store-$((round - 1))" ;;
            docker) reset_docker ;;
            buildah) reset_buildah ;;
        esac
        shared[$tool]+="$(measure "$tool" "$round" --no-cache) "
    done
    echo "round $round (${order[*]}): cold on one shared ext4, after deleting the last:" \
        "$(for tool in "${tools[@]}"; do echo -n "$tool $(awk '{print $NF}' <<<"${shared[$tool]}") "; done)"
done

printf '\n%-22s %10s %10s %10s %14s %14s\n' "seconds (median)" rbuild docker buildah "docker/rbuild" "buildah/rbuild"
declare -A label=([cold]=cold [warm]=warm [change]=change [shared]="cold, shared fs")
for row in cold warm change shared; do
    declare -n data=$row
    r=$(median <<<"${data[rbuild]}"); d=$(median <<<"${data[docker]}"); b=$(median <<<"${data[buildah]}")
    printf '%-22s %10.3f %10.3f %10.3f %13.1fx %13.1fx\n' "${label[$row]}" "$r" "$d" "$b" \
        "$(awk "BEGIN {print $d/$r}")" "$(awk "BEGIN {print $b/$r}")"
done
