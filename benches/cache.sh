#!/usr/bin/env bash
# A fresh CI runner building from a registry cache, side by side in one run: rbuild with an
# empty store and `--cache-from` a `--cache-to type=registry,mode=max` cache, against `docker
# build` (its built-in BuildKit) with an emptied builder cache and image store and
# `--cache-from` the image it pushed with `BUILDKIT_INLINE_CACHE=1` — the registry cache that
# docker's BuildKit supports. Both push the image to the registry that holds the cache, on the
# generated bench context (~20,000 files, ~200 MB, multi-stage, RUN steps). Also the same
# rbuild build with a warm store (the one that wrote the cache), and the cached layer bytes the
# fresh rbuild downloaded.
# Rounds alternate (rbuild, docker, rbuild warm) and medians are reported, of wall time and,
# for rbuild, of CPU time (user + system), which a shared machine's load disturbs less.
#
#   benches/cache.sh              # 3 rounds
#   RUNS=1 benches/cache.sh       # 1 round
#
# Needs root, dockerd, runc, python3, busybox and scripts/test's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
docker=/usr/bin/docker
source benches/common.sh
need "$docker" dockerd runc python3 busybox curl
build_rbuild

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rbuild-cache-bench.XXXXXX")
cleanup() {
    stop_registry "$work"
    stop_dockerd "$work"
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
start_dockerd "$work" "$work/docker-root"
export DOCKER_HOST="unix://$work/docker.sock"
base=$(start_registry_with_busybox "$work")
registry=${base%%/*}
python3 benches/build/generate-context.py "$work/context"
context="$work/context"
echo "context: $(find "$context" -type f | wc -l) files, $(du -sm "$context" | cut -f1) MB"

image=$registry/bench/app
rbuild_build() { # STORE [flags]: prints the seconds: wall, CPU (user + system) and system
    local store=$1 s cpu; shift
    s=$(now)
    cpu=$( { TIMEFORMAT='%U %S'; time RBUILD_ROOT="$store" "$bin" build --progress plain --network none \
        --push -t "$image:rbuild" --build-arg "BASE=$base" --metrics-file "$store.metrics.json" "$@" \
        "$context" >"$work/rbuild.log" 2>&1 || { cat "$work/rbuild.log" >&2; exit 1; }; } 2>&1 )
    awk "BEGIN {printf \"%.3f %.3f %.3f\\n\", $(now) - $s, ${cpu% *} + ${cpu#* }, ${cpu#* }}"
}
docker_build() { # [flags]: prints the seconds
    local s; s=$(now)
    DOCKER_BUILDKIT=1 "$docker" build --network=none -q -t "$image:docker" --build-arg BUILDKIT_INLINE_CACHE=1 \
        --build-arg "BASE=$base" "$@" "$context" >"$work/docker.log" 2>&1 || { cat "$work/docker.log" >&2; exit 1; }
    "$docker" push -q "$image:docker" >>"$work/docker.log" 2>&1
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
docker_empty() {
    "$docker" rmi -f "$image:docker" "$base" >/dev/null 2>&1 || true
    "$docker" builder prune -af >/dev/null 2>&1 || true
}

# The caches, written once by a first (cold) build of each.
rbuild_build "$work/seed" --cache-to "type=registry,ref=$image:cache,mode=max" >/dev/null
docker_empty
docker_build >/dev/null
echo "seeded: rbuild cache $image:cache, docker inline cache $image:docker"

# Cached layer bytes a fresh build downloaded: the layers its steps reused that are in its store.
downloaded() { # STORE
    python3 - "$1" <<'PY'
import json, os, sys
store = sys.argv[1]
steps = json.load(open(store + ".metrics.json"))["steps"]
blobs = os.path.join(store, "oci/blobs/sha256")
total = 0
for step in steps:
    layer = step.get("layer")
    if step["cache"] == "hit" and layer:
        path = os.path.join(blobs, layer.split(":", 1)[1])
        if os.path.exists(path):
            total += os.path.getsize(path)
print(total)
PY
}

declare -A data
for round in $(seq "$RUNS"); do
    store=$work/fresh-$round
    sync
    read -r wall cpu sys < <(rbuild_build "$store" --cache-from "$image:cache")
    data[fresh]+=" $wall" data[fresh_cpu]+=" $cpu" data[fresh_sys]+=" $sys"
    data[bytes]+=" $(downloaded "$store")"
    docker_empty
    sync
    data[docker]+=" $(docker_build --cache-from "$image:docker")"
    sync
    read -r wall cpu sys < <(rbuild_build "$work/seed")
    data[warm]+=" $wall" data[warm_cpu]+=" $cpu" data[warm_sys]+=" $sys"
    echo "round $round: rbuild fresh ${data[fresh]##* }s (CPU ${data[fresh_cpu]##* }s, cached layer bytes downloaded: ${data[bytes]##* }), docker ${data[docker]##* }s, rbuild warm ${data[warm]##* }s (CPU ${data[warm_cpu]##* }s)"
done
fresh=$(median <<<"${data[fresh]}")
dockers=$(median <<<"${data[docker]}")
warm=$(median <<<"${data[warm]}")
fresh_cpu=$(median <<<"${data[fresh_cpu]}")
warm_cpu=$(median <<<"${data[warm_cpu]}")
printf '\n%-44s %10s\n' "median of $RUNS" seconds
printf '%-44s %10.3f\n' "rbuild, empty store, --cache-from registry" "$fresh"
printf '%-44s %10.3f\n' "docker build, emptied, --cache-from inline" "$dockers"
printf '%-44s %10.3f\n' "rbuild, warm store" "$warm"
printf '%-44s %9.1fx\n' "docker / rbuild fresh" "$(awk "BEGIN {print $dockers / $fresh}")"
printf '%-44s %9.1fx\n' "rbuild fresh / rbuild warm" "$(awk "BEGIN {print $fresh / $warm}")"
# CPU time is steadier than wall time on a shared machine: the same ratio in CPU seconds.
printf '%-44s %10.3f\n' "rbuild fresh, CPU (user + system)" "$fresh_cpu"
printf '%-44s %10.3f\n' "rbuild warm, CPU (user + system)" "$warm_cpu"
printf '%-44s %9.1fx\n' "rbuild fresh / rbuild warm, CPU" "$(awk "BEGIN {print $fresh_cpu / $warm_cpu}")"
# What no hash function can save: the kernel's time opening and reading the context's files,
# which a warm store's stat cache never opens (the system time the fresh build spends beyond
# the warm one), spread over every core, on top of the warm build's wall time.
fresh_sys=$(median <<<"${data[fresh_sys]}")
warm_sys=$(median <<<"${data[warm_sys]}")
cores=$(nproc)
printf '%-44s %10.3f\n' "rbuild fresh - warm, system CPU" "$(awk "BEGIN {print $fresh_sys - $warm_sys}")"
printf '%-44s %9.1fx\n' "floor of fresh / warm from that, $cores cores" \
    "$(awk "BEGIN {print ($warm + ($fresh_sys - $warm_sys) / $cores) / $warm}")"
printf '%-44s %10s\n' "cached layer bytes the fresh rbuild downloaded" "$(median <<<"${data[bytes]}")"
