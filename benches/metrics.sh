#!/usr/bin/env bash
# What `GET /metrics` costs `rbuild serve`: manifest GET throughput (wrk) with and without a
# scrape every second, alternating A B A B in one run, each B measured against the A before it;
# and, less noisy, the server CPU one scrape takes against the server CPU per second that the
# manifest GETs keep busy.
#
#   benches/metrics.sh                        # RUNS=8 pairs of DURATION=10 s wrk runs
#   RBUILD=/tmp/rbuild benches/metrics.sh     # another build of rbuild, not this checkout's
#
# Needs: wrk curl openssl python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-8}
DURATION=${DURATION:-10}

source benches/common.sh
need wrk curl openssl python3
if [[ -n ${RBUILD:-} ]]; then rbuild=$RBUILD; else build_rbuild; rbuild=$bin; fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rbuild-metrics.XXXXXX")
server="" scraper=""
cleanup() {
    for pid in $scraper $server; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) process $1 has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# One notification endpoint, for deletes only (so the GETs make no events and it is never
# sent anything), so that the scrape carries the notification families' series besides the
# proxy and GC ones, which are there without configuration.
cat >"$work/config.toml" <<'TOML'
[[notifications]]
name = "bench"
url = "http://127.0.0.1:9/events"
actions = ["delete"]
TOML
echo "-- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
port=$(free_port)
base="http://127.0.0.1:$port"
RUST_LOG=warn "$rbuild" serve --config "$work/config.toml" --addr "127.0.0.1:$port" --root "$work/root" \
    >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf -o /dev/null "$base/v2/" && break; sleep 0.1; done

# One small image: config and layer by monolithic POST, then the manifest.
config='{"architecture":"amd64","os":"linux"}'
layer="bench layer"
sha() { printf %s "$1" | openssl dgst -sha256 | awk '{print "sha256:" $NF}'; }
for content in "$config" "$layer"; do
    curl -sf -o /dev/null --data-binary "$content" -H 'Content-Type: application/octet-stream' \
        "$base/v2/bench/app/blobs/uploads/?digest=$(sha "$content")"
done
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$(sha "$config")\",\"size\":${#config}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$(sha "$layer")\",\"size\":${#layer}}]}"
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "$manifest" "$base/v2/bench/app/manifests/v1"

accept='Accept: application/vnd.oci.image.manifest.v1+json'
openmetrics='Accept: application/openmetrics-text; version=1.0.0'
get_rate() { wrk -t2 -c32 -d"${DURATION}s" -H "$accept" "$base/v2/bench/app/manifests/v1" | awk '/Requests\/sec/ {print $2}'; }
scrape() { curl -sf -o /dev/null -H "$openmetrics" "$base/metrics"; }

# Warm up (and fill every series the GETs touch, so scrapes are full size).
get_rate >/dev/null

# The scraper is one long-lived process on a kept-alive connection, as Prometheus is: a
# `curl` started every second would cost the machine more than the scrape costs the server.
scraper_start() {
    python3 - "$port" <<'PY' &
import http.client, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
while True:
    conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    conn.getresponse().read()
    time.sleep(1)
PY
    scraper=$!
}
scraper_stop() { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=""; }
scraped_rate() { scraper_start; get_rate; scraper_stop; }

echo "-- manifest GET req/s (wrk -t2 -c32, ${DURATION}s), without (A) and with (B) a scrape every second, A B B A ..."
plain="" scraped="" ratios=""
for run in $(seq "$RUNS"); do
    # Alternate the order, so a drift in the machine's load does not favour one side.
    if ((run % 2)); then a=$(get_rate); b=$(scraped_rate); else b=$(scraped_rate); a=$(get_rate); fi
    plain+="$a " scraped+="$b "
    ratios+="$(awk "BEGIN {printf \"%.4f\", $b / $a}") "
    echo "run $run: A $a  B $b  B/A $(awk "BEGIN {printf \"%.3f\", $b / $a}")"
done
a=$(median <<<"$plain") b=$(median <<<"$scraped") r=$(median <<<"$ratios")
echo "median: A $a req/s, B $b req/s, median B/A $r (throughput lost to scraping: $(awk "BEGIN {printf \"%.2f\", (1 - $r) * 100}")%)"

echo "-- server CPU per scrape, against server CPU per second under manifest GETs"
scrapes=1000
c0=$(cpu_of "$server")
for _ in $(seq "$scrapes"); do scrape; done
c1=$(cpu_of "$server")
per_scrape_ms=$(awk "BEGIN {printf \"%.3f\", ($c1 - $c0) * 1000 / $scrapes}")
c0=$(cpu_of "$server")
get_rate >/dev/null
c1=$(cpu_of "$server")
busy=$(awk "BEGIN {printf \"%.3f\", ($c1 - $c0) / $DURATION}")
bytes=$(curl -sf -H "$openmetrics" "$base/metrics" | wc -c)
echo "one scrape ($bytes bytes): $per_scrape_ms ms of server CPU (mean of $scrapes);" \
    "manifest GETs keep the server at $busy CPU-seconds per second;" \
    "a scrape every second: $(awk "BEGIN {printf \"%.3f\", $per_scrape_ms / 1000 / $busy * 100}")% of that"
echo "-- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
