#!/usr/bin/env bash
# `rbuild bake` of three images against three sequential `docker build`s (docker 20.10's
# built-in BuildKit), cold, side by side in one run, on the builder bench's generated context
# (~20,000 files, ~200 MB) with a Dockerfile of five stages: three images (api, worker, web)
# over two stages they share (deps, read by all three; assets, read by worker and based on by
# web). Also, as a second anchor, the same three images by three sequential `rbuild build`s:
# what building them in one process, at once, adds.
#
# Cold: rbuild with a new store for the round, docker after `builder prune` and removing the
# three images (the busybox base stays in docker's store; rbuild pulls it from a local
# registry). Docker's three builds share its builder cache, as bake's targets share rbuild's
# store: each docker build after the first finds the shared stages there. Each builder keeps
# its state on an ext4 of its own (see benches/build.sh for why); every timed run starts after
# `sync` and a pause; the order rotates each round and medians are reported.
#
#   benches/bake.sh              # 3 rounds
#   RUNS=1 PAUSE=3 benches/bake.sh
#
# Needs root (mount), dockerd, runc, python3, busybox and scripts/test's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
docker=/usr/bin/docker
source benches/common.sh
need "$docker" dockerd runc python3 busybox curl mkfs.ext4
build_rbuild

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rbuild-bake-bench.XXXXXX")
cleanup() {
    stop_registry "$work"
    stop_dockerd "$work"
    unmount_under "$work"
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
for tool in rbuild docker; do make_ext4 "$tool" 12G; done
start_dockerd "$work" "$work/docker/root"
export DOCKER_HOST="unix://$work/docker.sock"
base=$(start_registry_with_busybox "$work")

python3 benches/build/generate-context.py "$work/context"
context="$work/context"
echo "context: $(find "$context" -type f | wc -l) files, $(du -sm "$context" | cut -f1) MB"
cat >"$context/bake.Dockerfile" <<'DOCKERFILE'
ARG BASE
FROM ${BASE} AS deps
COPY package-lock.json /app/
RUN wc -c < /app/package-lock.json > /app/deps.txt

FROM ${BASE} AS assets
COPY assets/ /app/assets/
RUN du -s /app/assets > /app/assets.txt

FROM ${BASE} AS api
COPY --from=deps /app/deps.txt /app/
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count.txt
CMD ["cat", "/app/count.txt"]

FROM ${BASE} AS worker
COPY --from=deps /app/deps.txt /app/
COPY --from=assets /app/assets.txt /app/
COPY src/ /app/src/
RUN find /app/src -name '*.rs' | wc -l > /app/count.txt
CMD ["cat", "/app/count.txt"]

FROM assets AS web
COPY --from=deps /app/deps.txt /app/
RUN ls /app/assets/img | wc -l > /app/count.txt
CMD ["cat", "/app/count.txt"]
DOCKERFILE
images=(api worker web)
{
    echo "services:"
    for image in "${images[@]}"; do
        printf '  %s:\n    build:\n      context: %s\n      dockerfile: bake.Dockerfile\n' "$image" "$context"
        printf '      target: %s\n      network: none\n      args:\n        BASE: %s\n' "$image" "$base"
        printf '      tags: [bench/%s:rbuild]\n' "$image"
    done
} >"$work/compose.yaml"

time_bake() { # STORE: prints the seconds
    local store=$1 s; s=$(now)
    RBUILD_ROOT="$store" "$bin" bake -f "$work/compose.yaml" --progress plain --metrics-dir "$store.metrics" \
        >"$work/bake.log" 2>&1 || { cat "$work/bake.log" >&2; exit 1; }
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
time_builds() { # STORE: prints the seconds
    local store=$1 s image; s=$(now)
    for image in "${images[@]}"; do
        RBUILD_ROOT="$store" "$bin" build --progress plain --network none -f "$context/bake.Dockerfile" \
            --target "$image" -t "bench/$image:rbuild" --build-arg "BASE=$base" "$context" \
            >"$work/builds.log" 2>&1 || { cat "$work/builds.log" >&2; exit 1; }
    done
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
time_docker() { # prints the seconds
    local s image; s=$(now)
    for image in "${images[@]}"; do
        DOCKER_BUILDKIT=1 "$docker" build --network=none -q -f "$context/bake.Dockerfile" --target "$image" \
            -t "bench/$image:docker" --build-arg "BASE=$base" "$context" \
            >"$work/docker.log" 2>&1 || { cat "$work/docker.log" >&2; exit 1; }
    done
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}
reset_docker() {
    for image in "${images[@]}"; do "$docker" rmi -f "bench/$image:docker" >/dev/null 2>&1 || true; done
    "$docker" builder prune -af >/dev/null 2>&1 || true
}
measure() { # TOOL ROUND
    local tool=$1 round=$2
    sync
    sleep "${PAUSE:-10}"
    case $tool in
        bake) time_bake "$work/rbuild/bake-$round" ;;
        builds) time_builds "$work/rbuild/builds-$round" ;;
        docker) time_docker ;;
    esac
}
# What bake's metrics say: the RUN steps of the shared stages (deps, assets) run over all
# targets (2 when each ran once), and the targets' build times summed (more than the wall
# time when they overlapped).
bake_stats() { # STORE
    python3 - "$1.metrics" <<'PY'
import glob, json, sys
runs, summed = 0, 0.0
for path in glob.glob(sys.argv[1] + "/*.json"):
    metrics = json.load(open(path))
    summed += metrics["duration_ms"] / 1000
    for step in metrics["steps"]:
        if step["stage"] in ("deps", "assets") and step["instruction"].startswith("RUN") and step["cache"] == "miss":
            runs += 1
print(runs, f"{summed:.3f}")
PY
}

tools=(bake builds docker)
declare -A data
for round in $(seq "$RUNS"); do
    order=("${tools[@]:$(( (round - 1) % 3 ))}" "${tools[@]:0:$(( (round - 1) % 3 ))}")
    # The last round's stores go (the journal keeps their freed inodes from slowing the next
    # files down), and docker's builder cache and images.
    rm -rf "$work/rbuild/bake-$((round - 1))" "$work/rbuild/builds-$((round - 1))"
    reset_docker
    for tool in "${order[@]}"; do data[$tool]+=" $(measure "$tool" "$round")"; done
    read -r runs summed < <(bake_stats "$work/rbuild/bake-$round")
    # This machine is shared: ratios within a round, where all three met the same load, say
    # more than ratios of medians taken across rounds.
    data[docker_ratio]+=" $(awk "BEGIN {print ${data[docker]##* } / ${data[bake]##* }}")"
    data[builds_ratio]+=" $(awk "BEGIN {print ${data[builds]##* } / ${data[bake]##* }}")"
    echo "round $round (${order[*]}): rbuild bake ${data[bake]##* }s (shared-stage RUNs run: $runs," \
        "targets' build times summed: ${summed}s)," \
        "rbuild 3 builds ${data[builds]##* }s, docker 3 builds ${data[docker]##* }s"
done
bake=$(median <<<"${data[bake]}")
builds=$(median <<<"${data[builds]}")
dockers=$(median <<<"${data[docker]}")
printf '\n%-50s %10s\n' "median of $RUNS, cold, 3 images" seconds
printf '%-50s %10.3f\n' "rbuild bake" "$bake"
printf '%-50s %10.3f\n' "rbuild build, 3 in a row" "$builds"
printf '%-50s %10.3f\n' "docker build, 3 in a row" "$dockers"
printf '%-50s %9.1fx\n' "docker / rbuild bake, median of rounds" "$(median <<<"${data[docker_ratio]}")"
printf '%-50s %9.1fx\n' "rbuild 3 builds / rbuild bake, median of rounds" "$(median <<<"${data[builds_ratio]}")"
