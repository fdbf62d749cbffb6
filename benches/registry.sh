#!/usr/bin/env bash
# rbuild serve against Debian's docker-registry (CNCF distribution 2.8.2), side by side in one
# run on the same filesystem, alternating A B A B. Prints each figure and the ratio.
#
#   benches/registry.sh            # full run (a few minutes, ~10 GiB of scratch disk)
#   RUNS=1 benches/registry.sh     # one repetition of each figure
#   FIGURES=upload TMPDIR=/dev/shm benches/registry.sh   # only the 1 GiB figures, tmpfs roots
#   RBUILD=/tmp/rbuild-before benches/registry.sh        # another build of rbuild, not this one
#
# FIGURES is a comma-separated subset of upload,push,requests,rss (default: all).
# Needs: docker-registry wrk apache2-utils (ab) curl openssl python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
FIGURES=${FIGURES:-all}
want() { [[ $FIGURES == all || ,$FIGURES, == *,$1,* ]]; }

source benches/common.sh
need docker-registry wrk ab curl openssl python3
# registry-load (rbuild-benches) drives the push and RSS figures only. RBUILD=<binary> measures
# that build of rbuild instead of building this checkout's (A/B comparisons).
if want push || want rss; then packages=(-p rbuild-benches); else packages=(); fi
[[ -n ${RBUILD:-} ]] || packages+=(-p rbuild)
[[ ${#packages[@]} -eq 0 ]] || cargo build --release --quiet "${packages[@]}"
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
rbuild=${RBUILD:-$bin/rbuild}

make_workdir rbuild-bench

# start NAME: starts a fresh registry with an empty root; sets URL_<NAME> and PID_<NAME>.
start() {
    local name=$1 port
    port=$(free_port)
    rm -rf "$work/$name"
    mkdir -p "$work/$name"
    if [[ $name == rbuild ]]; then
        RUST_LOG=warn "$rbuild" serve --addr "127.0.0.1:$port" --root "$work/$name/root" \
            >"$work/$name.log" 2>&1 &
    else
        cat >"$work/distribution.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/$name/root}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
YAML
        docker-registry serve "$work/distribution.yml" >"$work/$name.log" 2>&1 &
    fi
    local pid=$!
    pids+=("$pid")
    printf -v "PID_$name" %s "$pid"
    printf -v "URL_$name" %s "http://127.0.0.1:$port"
    wait_up "http://127.0.0.1:$port"
}

start rbuild
start distribution
printf '%-38s %12s %12s %9s\n' "figure" "rbuild" "distribution" "ratio"

if want upload; then
echo "-- 1 GiB blob upload (monolithic PUT) and download, with the machine's limits on the same bytes"
blob="$work/blob-1g"
head -c 1073741824 /dev/urandom >"$blob"
digest="sha256:$(openssl dgst -sha256 "$blob" | awk '{print $NF}')"
declare -A up down cpu
for name in rbuild distribution; do up[$name]=""; down[$name]=""; cpu[$name]=""; done
sha="" copy=""
for run in $(seq "$RUNS"); do
    for name in rbuild distribution; do
        base=$(url $name)
        pid_var="PID_$name"
        c0=$(cpu_seconds "${!pid_var}")
        s=$(upload_file "$base" "big/r$run" "$blob" "$digest")
        c1=$(cpu_seconds "${!pid_var}")
        up[$name]+="$(awk "BEGIN {print 1073.741824/$s}") "
        cpu[$name]+="$(awk "BEGIN {print $c1 - $c0}") "
        d=$(curl -sf -o /dev/null -w '%{speed_download}' "$base/v2/big/r$run/blobs/$digest")
        down[$name]+="$(awk "BEGIN {print $d/1e6}") "
    done
    # The anchors, interleaved with the uploads so that they see the same load.
    sha+="$(awk "BEGIN {print 1073.741824/$(seconds openssl dgst -sha256 "$blob")}") "
    copy+="$(awk "BEGIN {print 1073.741824/$(seconds cat "$blob")}") "
done
report "1 GiB upload" "MB/s, median" "$(tr ' ' '\n' <<<"${up[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${up[distribution]}" | grep . | median)"
report "server CPU per 1 GiB upload" "s, median, lower is better" "$(tr ' ' '\n' <<<"${cpu[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${cpu[distribution]}" | grep . | median)" lower
report "1 GiB download" "MB/s, median" "$(tr ' ' '\n' <<<"${down[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${down[distribution]}" | grep . | median)"
echo "anchors in the same runs: openssl dgst -sha256 $(tr ' ' '\n' <<<"$sha" | grep . | median) MB/s, cat $(tr ' ' '\n' <<<"$copy" | grep . | median) MB/s (medians)"
echo "uploads (MB/s): rbuild ${up[rbuild]}| distribution ${up[distribution]}| openssl $sha"
rm -f "$blob"
fi

if want push; then
echo "-- 1,000 x 1 MiB blob pushes, 8 concurrent clients (POST, streamed PATCH, PUT)"
declare -A push
for name in rbuild distribution; do push[$name]=""; done
for run in $(seq "$RUNS"); do
    for name in rbuild distribution; do
        line=$("$bin/registry-load" push "$(url $name)" "many/r$run" 1000 1048576 8)
        push[$name]+="$(sed 's/.*MB\/s=//' <<<"$line") "
    done
done
report "1000 x 1 MiB pushes (8 clients)" "MB/s, median" "$(tr ' ' '\n' <<<"${push[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${push[distribution]}" | grep . | median)"
fi

if want requests; then
echo "-- manifest GET/HEAD and tag list requests/s"
# One small image with 100 tags in each registry.
for name in rbuild distribution; do push_tagged_image "$(url $name)" 100; done
accept='Accept: application/vnd.oci.image.manifest.v1+json'
declare -A get head tags
for name in rbuild distribution; do get[$name]=""; head[$name]=""; tags[$name]=""; done
for run in $(seq "$RUNS"); do
    for name in rbuild distribution; do
        base=$(url $name)
        get[$name]+="$(wrk -t2 -c32 -d5s -H "$accept" "$base/v2/bench/app/manifests/tag1" | awk '/Requests\/sec/ {print $2}') "
        head[$name]+="$(ab -q -i -k -c32 -n40000 -H "$accept" "$base/v2/bench/app/manifests/tag1" 2>/dev/null | awk '/Requests per second/ {print $4}') "
        tags[$name]+="$(wrk -t2 -c32 -d5s "$base/v2/bench/app/tags/list" | awk '/Requests\/sec/ {print $2}') "
    done
done
report "manifest GET (wrk, 32 conns)" "req/s, median" "$(tr ' ' '\n' <<<"${get[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${get[distribution]}" | grep . | median)"
report "manifest HEAD (ab -k, 32 conns)" "req/s, median" "$(tr ' ' '\n' <<<"${head[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${head[distribution]}" | grep . | median)"
report "tag list, 100 tags (wrk, 32 conns)" "req/s, median" "$(tr ' ' '\n' <<<"${tags[rbuild]}" | grep . | median)" "$(tr ' ' '\n' <<<"${tags[distribution]}" | grep . | median)"
fi

if want rss; then
echo "-- peak RSS while 16 clients stream 256 MiB each (fresh servers)"
declare -A rss
for name in rbuild distribution; do
    stop $name
    start $name
    pid_var="PID_$name"
    "$bin/registry-load" stream "$(url $name)" mem/test 16 268435456 16 >/dev/null
    rss[$name]=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/${!pid_var}/status")
    stop $name
    rm -rf "$work/$name"
done
report "peak RSS, 16 x 256 MiB uploads" "MiB, lower is better" "${rss[rbuild]}" "${rss[distribution]}" lower
fi

echo
echo "== summary (ratio > 1 means rbuild is better)"
printf '%-38s %12s %12s %9s\n' "figure" "rbuild" "distribution" "ratio"
printf '%s\n' "${results[@]}"
