#!/usr/bin/env bash
# The pull-through cache: `rbuild serve` with a [[proxy]] table against Debian's docker-registry
# (CNCF distribution 2.8.2) in proxy mode (`proxy: remoteurl:`), both in front of the same
# upstream (an `rbuild serve`), and a direct pull from that upstream, in one run, alternating.
#
#   benches/proxy.sh                      # RUNS=5 of an image of three layers, 96+64+32 MiB
#   RUNS=3 LAYERS_MIB="32 16" benches/proxy.sh
#   LINK_MBPS=0 benches/proxy.sh          # the upstream on bare loopback instead
#   RBUILD=/tmp/rbuild-before benches/proxy.sh   # another build of rbuild, not this one's
#
# The upstream is reached over a link of LINK_MBPS MB/s (default 100, shared by every connection:
# benches/throttle.py), as a real upstream is far away; the direct pull and both caches use the
# same link. With LINK_MBPS=0 the link is bare loopback, where a cold pull, which must hash and
# write what it relays, cannot keep up with an upstream serving its page cache.
# A pull is what docker does short of unpacking: the manifest by tag, then its blobs three at a
# time (docker's default) over kept-alive connections, with curl, bodies to /dev/null. Cold: a cache started on an empty
# root just before; warm: the same cache pulled again at once. Both caches keep their defaults
# (rbuild fsyncs what it stores, distribution does not).
# Needs: docker-registry curl openssl python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
LAYERS_MIB=${LAYERS_MIB:-96 64 32}
LINK_MBPS=${LINK_MBPS:-100}

source benches/common.sh
need docker-registry curl openssl python3
if [[ -n ${RBUILD:-} ]]; then bin=$RBUILD; else build_rbuild; fi

make_workdir rbuild-bench-proxy

# start NAME KIND: a fresh registry on an empty root; KIND is upstream, rbuild (a cache of the
# upstream) or distribution (the same); sets URL_<NAME> and PID_<NAME>.
start() {
    local name=$1 kind=$2 port
    port=$(free_port)
    rm -rf "$work/$name"
    mkdir -p "$work/$name"
    case $kind in
    upstream) printf 'root = "%s"\n' "$work/$name/root" >"$work/$name/config.toml" ;;
    rbuild) printf 'root = "%s"\n[[proxy]]\nurl = "%s"\n' "$work/$name/root" "$URL_link" >"$work/$name/config.toml" ;;
    distribution)
        cat >"$work/$name/config.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/$name/root}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
proxy: {remoteurl: $URL_link}
YAML
        ;;
    esac
    if [[ $kind == distribution ]]; then
        docker-registry serve "$work/$name/config.yml" >"$work/$name.log" 2>&1 &
    else
        RUST_LOG=warn "$bin" serve --addr "127.0.0.1:$port" --config "$work/$name/config.toml" >"$work/$name.log" 2>&1 &
    fi
    local pid=$!
    pids+=("$pid")
    printf -v "PID_$name" %s "$pid"
    printf -v "URL_$name" %s "http://127.0.0.1:$port"
    wait_up "http://127.0.0.1:$port"
}

# The image, pushed to the upstream as bench/image:1.
start upstream upstream
blobs=()
total=0
push_blob() { # FILE: pushes it, adds it to blobs and total, sets pushed to its digest
    pushed=sha256:$(openssl dgst -sha256 -r "$1" | cut -d' ' -f1)
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
        "$URL_upstream/v2/bench/image/blobs/uploads/?digest=$pushed"
    blobs+=("$pushed")
    total=$((total + $(stat -c %s "$1")))
}
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config.json"
push_blob "$work/config.json"
config=$pushed
layers=""
for mib in $LAYERS_MIB; do
    head -c "${mib}M" /dev/urandom >"$work/layer"
    push_blob "$work/layer"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$pushed\",\"size\":$((mib * 1024 * 1024))}"
done
rm -f "$work/layer"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}' \
    "$config" "$(stat -c %s "$work/config.json")" "$layers" >"$work/manifest.json"
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$work/manifest.json" "$URL_upstream/v2/bench/image/manifests/1"

# The link to the upstream.
URL_link=$URL_upstream
if [[ $LINK_MBPS != 0 ]]; then
    link_port=$(free_port)
    python3 benches/throttle.py "$link_port" "${URL_upstream##*:}" "$LINK_MBPS" &
    pids+=("$!")
    URL_link=http://127.0.0.1:$link_port
    wait_up "$URL_link"
fi

# pull BASE: one pull of bench/image:1 from BASE; prints its seconds.
pull() {
    local base=$1 start end
    start=$(now)
    curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$base/v2/bench/image/manifests/1"
    local args=() blob
    for blob in "${blobs[@]}"; do args+=(-o /dev/null "$base/v2/bench/image/blobs/$blob"); done
    curl -sf --no-progress-meter --parallel --parallel-max 3 "${args[@]}"
    end=$(now)
    awk "BEGIN {printf \"%.3f\", $end - $start}"
}

direct=() rbuild_cold=() rbuild_warm=() dist_cold=() dist_warm=()
pull "$URL_link" >/dev/null # the upstream's files into the page cache, as for every run after
for run in $(seq "$RUNS"); do
    direct+=("$(pull "$URL_link")")
    for kind in rbuild distribution; do
        start cache "$kind"
        cold=$(pull "$URL_cache")
        warm=$(pull "$URL_cache")
        stop cache
        if [[ $kind == rbuild ]]; then rbuild_cold+=("$cold") rbuild_warm+=("$warm"); else dist_cold+=("$cold") dist_warm+=("$warm"); fi
    done
    echo "run $run: direct ${direct[-1]} s; rbuild cold ${rbuild_cold[-1]} warm ${rbuild_warm[-1]} s; distribution cold ${dist_cold[-1]} warm ${dist_warm[-1]} s"
done

m() { echo "$@" | median; }
d=$(m "${direct[@]}") rc=$(m "${rbuild_cold[@]}") rw=$(m "${rbuild_warm[@]}") dc=$(m "${dist_cold[@]}") dw=$(m "${dist_warm[@]}")
mb() { awk "BEGIN {printf \"%.0f\", $total / 1e6 / $1}"; }
echo
link="$LINK_MBPS MB/s"
[[ $LINK_MBPS != 0 ]] || link="bare loopback"
echo "image: $((total / 1024 / 1024)) MiB in ${#blobs[@]} blobs; link to the upstream: $link; medians of $RUNS"
printf '%-34s %8s %8s\n' "pull" "s" "MB/s"
printf '%-34s %8s %8s\n' "direct from the upstream" "$d" "$(mb "$d")"
printf '%-34s %8s %8s\n' "rbuild cache, cold" "$rc" "$(mb "$rc")"
printf '%-34s %8s %8s\n' "distribution cache, cold" "$dc" "$(mb "$dc")"
printf '%-34s %8s %8s\n' "rbuild cache, warm" "$rw" "$(mb "$rw")"
printf '%-34s %8s %8s\n' "distribution cache, warm" "$dw" "$(mb "$dw")"
awk "BEGIN {printf \"rbuild cold / direct: %.2f (target <= 1.10)\n\", $rc / $d}"
awk "BEGIN {printf \"rbuild warm speed / distribution warm speed: %.2fx (target >= 1.5)\n\", $dw / $rw}"
awk "BEGIN {printf \"rbuild cold speed / distribution cold speed: %.2fx\n\", $dc / $rc}"
