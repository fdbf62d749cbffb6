#!/usr/bin/env bash
# RUN against docker build (BuildKit) and buildah bud, side by side in one run:
#
# 1. Per-RUN overhead: ten RUN steps that each write one small file, built with --no-cache,
#    minus the same Dockerfile without them, divided by ten (bundle, runtime start, diff).
# 2. A RUN that writes 10,000 files: rbuild's diff + layer writing time (--metrics-file's
#    layer_ms) against `tar -c | pigz` of the same tree on the same filesystem.
#
#   benches/run.sh             # 3 rounds
#   RUNS=1 benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
source benches/common.sh
need /usr/bin/docker buildah runc pigz python3 busybox curl
/usr/bin/docker info >/dev/null 2>&1 || { echo "no docker engine: set DOCKER_HOST" >&2; exit 2; }
build_rbuild

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rbuild-run-bench.XXXXXX")
cleanup() {
    stop_registry "$work"
    unmount_under "$work"
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
base=$(start_registry_with_busybox "$work")

mkdir -p "$work/none" "$work/ten" "$work/many"
printf 'ARG BASE\nFROM ${BASE}\nLABEL step=none\n' >"$work/none/Dockerfile"
{
    printf 'ARG BASE\nFROM ${BASE}\n'
    for i in $(seq 10); do printf 'RUN echo %s > /step%s\n' "$i" "$i"; done
} >"$work/ten/Dockerfile"
printf 'ARG BASE\nFROM ${BASE}\nRUN mkdir /many && cd /many && i=0 && while [ $i -lt 10000 ]; do echo "file $i" > f$i; i=$((i+1)); done\n' \
    >"$work/many/Dockerfile"

build() { # TOOL CONTEXT -> seconds
    local tool=$1 ctx=$2 s
    s=$(now)
    case $tool in
        rbuild) RBUILD_ROOT="$work/store" "$bin" build --progress plain --no-cache --network none \
                    --metrics-file "$work/metrics.json" --build-arg "BASE=$base" "$ctx" >"$work/out.log" 2>&1 ;;
        docker) DOCKER_BUILDKIT=1 /usr/bin/docker build --no-cache --network=none -q --build-arg "BASE=$base" "$ctx" \
                    >"$work/out.log" 2>&1 ;;
        buildah) buildah --root "$work/buildah" --runroot "$work/buildah-run" bud --layers --no-cache --quiet \
                    --runtime /usr/sbin/runc --network=none --tls-verify=false --build-arg "BASE=$base" "$ctx" \
                    >"$work/out.log" 2>&1 ;;
    esac || { cat "$work/out.log" >&2; exit 1; }
    awk "BEGIN {printf \"%.3f\", $(now) - $s}"
}

declare -A per_step
for tool in rbuild docker buildah; do per_step[$tool]=""; build "$tool" "$work/none" >/dev/null; done
for round in $(seq "$RUNS"); do
    for tool in rbuild docker buildah; do
        t0=$(build "$tool" "$work/none"); t10=$(build "$tool" "$work/ten")
        per_step[$tool]+="$(awk "BEGIN {print ($t10 - $t0) / 10 * 1000}") "
    done
done
r=$(median <<<"${per_step[rbuild]}"); d=$(median <<<"${per_step[docker]}"); b=$(median <<<"${per_step[buildah]}")
printf '\n%-34s %10s %10s %10s %14s %14s\n' "" rbuild docker buildah "docker/rbuild" "buildah/rbuild"
printf '%-34s %10.0f %10.0f %10.0f %13.1fx %13.1fx\n' "per-RUN overhead (ms, median)" "$r" "$d" "$b" \
    "$(awk "BEGIN {print $d/$r}")" "$(awk "BEGIN {print $b/$r}")"

# 10,000 files: rbuild's diff + layer time against tar | pigz of the same tree.
layer=""; pigz_times=""
mkdir -p "$work/tree/many" && (cd "$work/tree/many" && i=0 && while [ $i -lt 10000 ]; do echo "file $i" > f$i; i=$((i+1)); done)
for round in $(seq "$RUNS"); do
    build rbuild "$work/many" >/dev/null
    layer+="$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(max(s["layer_ms"] for s in m["steps"]))' "$work/metrics.json") "
    s=$(now); tar -C "$work/tree" -c many | pigz >/dev/null; pigz_times+="$(awk "BEGIN {print ($(now) - $s) * 1000}") "
done
l=$(median <<<"$layer"); p=$(median <<<"$pigz_times")
printf '%-34s %10.0f %10s %10s %14s\n' "10,000-file RUN: diff+layer (ms)" "$l" "" "" ""
printf '%-34s %10.0f   (tar | pigz of the same tree; ratio pigz/rbuild %.2fx)\n' "anchor: tar -c | pigz (ms)" "$p" \
    "$(awk "BEGIN {print $p/$l}")"
