#!/usr/bin/env bash
# The registry at cluster scale: three `rbuild serve` replicas on S3 (Garage) + PostgreSQL
# against three Debian docker-registry (CNCF distribution 2.8.2) replicas with its S3 driver on
# the same Garage, side by side in one run, alternating A B A B. Prints each figure and the
# ratio (> 1 means rbuild is better), the server CPU each side spends per request or per GiB,
# and each replica's peak RSS.
#
#   benches/cluster.sh                        # full run (~15 minutes, ~8 GiB of scratch disk)
#   RUNS=1 FIGURES=requests benches/cluster.sh
#   SIDES=distribution benches/cluster.sh     # one side only (a build without the S3 backend)
#   RBUILD=/tmp/rbuild-before benches/cluster.sh   # another build of rbuild, not this one's
#
# FIGURES is a comma-separated subset of upload,push,requests (default: all).
# The engines are scripts/engines.sh's (Garage from ~/.cache/rbuild/tools/garage or
# $RBUILD_GARAGE), except that PostgreSQL keeps its durable defaults here (fsync on), as in
# production. Garage keeps its own defaults for both sides. Blob GETs are served by the replicas
# on both sides (distribution's S3 redirect is off; rbuild redirects only when told to).
# Needs: docker-registry wrk ab curl openssl python3, PostgreSQL 15, the Garage binary.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
FIGURES=${FIGURES:-all}
SIDES=${SIDES:-rbuild distribution}
REPLICAS=3
want() { [[ $FIGURES == all || ,$FIGURES, == *,$1,* ]]; }
read -ra sides <<<"$SIDES"

source benches/common.sh
source scripts/engines.sh
need docker-registry wrk ab curl openssl python3 psql
# Both packages always, so that cargo unifies their features the same way and reuses the build.
cargo build --release --quiet -p rbuild -p rbuild-benches
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
rbuild=${RBUILD:-$bin/rbuild}

make_workdir rbuild-bench-cluster
chmod a+x "$work" # the postgres user reaches its directory through it
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; engines_stop; cleanup_workdir' EXIT

# The engines: PostgreSQL (durable) and a one-node Garage with a bucket and a key.
ENGINES_DIR=$work/engines
pg=$ENGINES_DIR/postgres
engines_pg_init "$pg"
engines_as_postgres "$ENGINES_PG_BIN/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 \
    -o "-p $(cat "$pg/port") -k $pg -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
head -n 1 "$pg/data/postmaster.pid" >"$pg/pid"
psql -q "$(engines_pg_url "$pg")" -c 'CREATE DATABASE registry'
pg_url="postgres://postgres@127.0.0.1:$(cat "$pg/port")/registry"
garage=$ENGINES_DIR/garage
engines_garage_init "$garage"
engines_garage_start "$garage"
engines_garage_setup "$garage" bench
s3="http://127.0.0.1:$(cat "$garage/s3_port")"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(cat "$garage/key_id")
AWS_SECRET_ACCESS_KEY=$(cat "$garage/secret_key")

cat >"$work/rbuild.toml" <<TOML
[storage]
driver = "s3"
[storage.s3]
endpoint = "$s3"
region = "garage"
bucket = "bench"
prefix = "rbuild"
path_style = true
[metadata]
driver = "postgres"
[metadata.postgres]
url = "$pg_url"
TOML

# start SIDE I: replica I of rbuild or distribution, on a free port; sets URL_<SIDE><I> and
# PID_<SIDE><I>. Replicas of one side share the bucket (and rbuild's the database, and
# distribution's the HTTP secret that signs its upload state).
start() {
    local side=$1 i=$2 port
    port=$(free_port)
    if [[ $side == rbuild ]]; then
        RUST_LOG=warn "$rbuild" serve --addr "127.0.0.1:$port" --root "$work/rbuild$i" \
            --config "$work/rbuild.toml" >"$work/rbuild$i.log" 2>&1 &
    else
        cat >"$work/distribution$i.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  s3: {accesskey: $AWS_ACCESS_KEY_ID, secretkey: $AWS_SECRET_ACCESS_KEY, region: garage, regionendpoint: "$s3", bucket: bench, rootdirectory: /distribution, secure: false, v4auth: true}
  delete: {enabled: true}
  redirect: {disable: true}
  cache: {blobdescriptor: inmemory}
http: {addr: "127.0.0.1:$port", secret: bench-cluster}
YAML
        # Its AWS SDK panics on this machine's AWS_CA_BUNDLE.
        env -u AWS_CA_BUNDLE docker-registry serve "$work/distribution$i.yml" >"$work/distribution$i.log" 2>&1 &
    fi
    local pid=$!
    pids+=("$pid")
    printf -v "PID_$side$i" %s "$pid"
    printf -v "URL_$side$i" %s "http://127.0.0.1:$port"
    wait_up "http://127.0.0.1:$port"
}
pid_of() { local v="PID_$1"; echo "${!v}"; }
peak_rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$(pid_of "$1")/status"; }
# CPU seconds the replicas of SIDE have used so far, together.
side_cpu() { local i total=0; for i in $(seq $REPLICAS); do total=$(awk "BEGIN {print $total + $(cpu_seconds "$(pid_of "$1$i")")}"); done; echo "$total"; }
# CPU seconds of process $1, its live children and the children it has waited for (PostgreSQL's
# backends are children of the postmaster).
tree_cpu() {
    cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^\([0-9]*\) (.*) /\1 /' |
        awk -v hz="$(getconf CLK_TCK)" -v root="$1" '$1 == root {t += $13 + $14 + $15 + $16} $3 == root {t += $13 + $14} END {print t / hz}'
}
engines_cpu() { awk "BEGIN {print $(tree_cpu "$(cat "$garage/pid")") + $(tree_cpu "$(cat "$pg/pid")")}"; }
m() { tr ' ' '\n' <<<"$1" | grep . | median; }
# spread SIDE FUNCTION: runs `FUNCTION I URL` for the side's replicas at the same time, and
# prints the seconds until the last is done.
spread() {
    local side=$1 fn=$2 i t0 clients=()
    t0=$(now)
    for i in $(seq $REPLICAS); do "$fn" "$i" "$(url "$side$i")" & clients+=($!); done
    wait "${clients[@]}"
    awk "BEGIN {print $(now) - $t0}"
}
# The row for a figure: report_sides NAME UNIT VALUES_VAR [lower], from an associative array of
# space-separated samples per side; with one side only, prints its median.
report_sides() {
    local -n samples=$3
    if [[ ${#sides[@]} -eq 2 ]]; then
        report "$1" "$2, median" "$(m "${samples[rbuild]}")" "$(m "${samples[distribution]}")" "${4:-}"
    else
        results+=("$(printf '%-38s %12s  (%s, %s only)' "$1" "$(m "${samples[${sides[0]}]}")" "$2" "${sides[0]}")")
        echo "${results[-1]}"
    fi
}

for side in "${sides[@]}"; do
    for i in $(seq $REPLICAS); do start "$side" "$i"; done
done
echo "engines: Garage $("$ENGINES_GARAGE" --version 2>/dev/null | head -n 1 | awk '{print $2}') at $s3, PostgreSQL at $pg_url; replicas: $(for s in "${sides[@]}"; do for i in $(seq $REPLICAS); do printf '%s ' "$(url "$s$i")"; done; done)"
header() { if [[ ${#sides[@]} -eq 2 ]]; then printf '%-38s %12s %12s %9s\n' "figure" "rbuild" "distribution" "ratio"; fi; }
header

if want upload; then
    echo "-- 1 GiB blob upload (monolithic PUT) and download through replica 1; peak RSS after a 64 MiB and after the 1 GiB uploads"
    small="$work/blob-64m"
    head -c 67108864 /dev/urandom >"$small"
    for side in "${sides[@]}"; do
        upload_file "$(url "${side}1")" small/blob "$small" "sha256:$(openssl dgst -sha256 "$small" | awk '{print $NF}')" >/dev/null
        declare "rss_small_$side=$(peak_rss "${side}1")"
    done
    rm -f "$small"
    blob="$work/blob-1g"
    head -c 1073741824 /dev/urandom >"$blob"
    digest="sha256:$(openssl dgst -sha256 "$blob" | awk '{print $NF}')"
    declare -A up down cpu engine_cpu
    for run in $(seq "$RUNS"); do
        for side in "${sides[@]}"; do
            base=$(url "${side}1")
            c0=$(side_cpu "$side") e0=$(engines_cpu)
            s=$(upload_file "$base" "big/r$run" "$blob" "$digest")
            c1=$(side_cpu "$side") e1=$(engines_cpu)
            up[$side]+="$(awk "BEGIN {print 1073.741824/$s}") "
            cpu[$side]+="$(awk "BEGIN {print $c1 - $c0}") "
            engine_cpu[$side]+="$(awk "BEGIN {print $e1 - $e0}") "
            d=$(curl -sf -o /dev/null -w '%{speed_download}' "$base/v2/big/r$run/blobs/$digest")
            down[$side]+="$(awk "BEGIN {print $d/1e6}") "
        done
    done
    report_sides "1 GiB upload" "MB/s" up
    report_sides "1 GiB download" "MB/s" down
    report_sides "replica CPU per 1 GiB upload" "s, lower is better" cpu lower
    report_sides "Garage+PG CPU per 1 GiB upload" "s, lower is better" engine_cpu lower
    for side in "${sides[@]}"; do
        v="rss_small_$side"
        echo "$side replica 1 peak RSS: ${!v} MiB after a 64 MiB upload, $(peak_rss "${side}1") MiB after the 1 GiB uploads; uploads (MB/s): ${up[$side]}"
    done
    rm -f "$blob"
fi

if want push; then
    echo "-- 1,000 x 1 MiB blob pushes from 8 clients (POST, streamed PATCH, PUT): through replica 1, then spread over the three"
    declare -A push1 push3 push_cpu
    push_share() { "$bin/registry-load" push "$2" "spread/r$run" $(($1 == 1 ? 334 : 333)) 1048576 $(($1 < 3 ? 3 : 2)) >/dev/null; }
    for run in $(seq "$RUNS"); do
        for side in "${sides[@]}"; do
            c0=$(side_cpu "$side")
            line=$("$bin/registry-load" push "$(url "${side}1")" "many/r$run" 1000 1048576 8)
            c1=$(side_cpu "$side")
            push1[$side]+="$(sed 's/.*MB\/s=//' <<<"$line") "
            push_cpu[$side]+="$(awk "BEGIN {print $c1 - $c0}") " # s per 1000 pushes = ms per push
            # The same load split 334/333/333 blobs, 3/3/2 clients, one share per replica.
            push3[$side]+="$(awk "BEGIN {print 1048.576 / $(spread "$side" push_share)}") "
        done
    done
    report_sides "1000 x 1 MiB, 8 clients, 1 replica" "MB/s" push1
    report_sides "1000 x 1 MiB, 8 clients, 3 replicas" "MB/s" push3
    report_sides "replica CPU per 1 MiB push" "ms, lower is better" push_cpu lower
fi

if want requests; then
    echo "-- manifest GET (wrk) and HEAD (ab -i -k) requests/s, 32 connections for 5 s: to replica 1, then 11+11+10 to the three at once"
    for side in "${sides[@]}"; do push_tagged_image "$(url "${side}1")" 10; done
    accept='Accept: application/vnd.oci.image.manifest.v1+json'
    path=/v2/bench/app/manifests/tag1
    declare -A get1 get3 head1 head3 get_cpu get_engine_cpu head_cpu
    get_share() { wrk -t1 -c$(($1 < 3 ? 11 : 10)) -d5s -H "$accept" "$2$path" >"$work/wrk$1"; }
    head_share() { ab -q -i -k -c$(($1 < 3 ? 11 : 10)) -t5 -n10000000 -H "$accept" "$2$path" >"$work/ab$1" 2>&1; }
    rate() { awk '/Requests\/sec|Requests per second/ {print $2 == "per" ? $4 : $2}' "$1"; }
    for run in $(seq "$RUNS"); do
        for side in "${sides[@]}"; do
            c0=$(side_cpu "$side") e0=$(engines_cpu)
            out=$(wrk -t2 -c32 -d5s -H "$accept" "$(url "${side}1")$path")
            c1=$(side_cpu "$side") e1=$(engines_cpu)
            n=$(awk '/requests in/ {print $1}' <<<"$out")
            get1[$side]+="$(rate <(echo "$out")) "
            get_cpu[$side]+="$(awk "BEGIN {print ($c1 - $c0) * 1e6 / $n}") "
            get_engine_cpu[$side]+="$(awk "BEGIN {print ($e1 - $e0) * 1e6 / $n}") "
            spread "$side" get_share >/dev/null
            get3[$side]+="$(for i in 1 2 3; do rate "$work/wrk$i"; done | awk '{t += $1} END {print t}') "
            c0=$(side_cpu "$side")
            ab -q -i -k -c32 -t5 -n10000000 -H "$accept" "$(url "${side}1")$path" >"$work/ab" 2>&1
            c1=$(side_cpu "$side")
            head1[$side]+="$(rate "$work/ab") "
            head_cpu[$side]+="$(awk "BEGIN {print ($c1 - $c0) * 1e6 / $(awk '/Complete requests/ {print $3}' "$work/ab")}") "
            spread "$side" head_share >/dev/null
            head3[$side]+="$(for i in 1 2 3; do rate "$work/ab$i"; done | awk '{t += $1} END {print t}') "
        done
    done
    report_sides "manifest GET, 1 replica" "req/s" get1
    report_sides "manifest GET, 3 replicas" "req/s" get3
    report_sides "manifest HEAD, 1 replica" "req/s" head1
    report_sides "manifest HEAD, 3 replicas" "req/s" head3
    report_sides "replica CPU per manifest GET" "µs, lower is better" get_cpu lower
    report_sides "Garage+PG CPU per manifest GET" "µs, lower is better" get_engine_cpu lower
    report_sides "replica CPU per manifest HEAD" "µs, lower is better" head_cpu lower
fi

echo "-- peak RSS per replica over the whole run (MiB)"
for side in "${sides[@]}"; do
    echo "$side: $(for i in $(seq $REPLICAS); do printf '%s ' "$(peak_rss "$side$i")"; done)"
done

echo
echo "== summary (ratio > 1 means rbuild is better); load average $(cut -d' ' -f1-3 /proc/loadavg)"
header
printf '%s\n' "${results[@]}"
