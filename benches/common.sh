# Shared by the comparison scripts (sourced, not run).

# Exits with status 2, naming the script and the tool, unless every tool given is on PATH.
need() {
    local tool
    for tool; do
        command -v "$tool" >/dev/null || { echo "$0 needs $tool" >&2; exit 2; }
    done
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The median of the numbers on stdin (one per line, or space-separated).
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# Starts `rbuild serve` on a free port with its root under $1 (its PID in $1/registry.pid, for
# stop_registry), builds the busybox base with docker, pushes it, and prints its reference.
start_registry_with_busybox() {
    local dir=$1 port
    port=$(free_port)
    "$bin" serve --addr "127.0.0.1:$port" --root "$dir/registry" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
    mkdir -p "$dir/base" && cp "$(command -v busybox)" "$dir/base/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nCMD ["/bin/sh"]\n' \
        >"$dir/base/Dockerfile"
    local base="127.0.0.1:$port/bench/busybox:1"
    DOCKER_BUILDKIT=1 /usr/bin/docker build --network=none -q -t "$base" "$dir/base" >/dev/null
    /usr/bin/docker push -q "$base" >/dev/null
    echo "$base"
}

# Starts a private dockerd (it starts its own containerd) with its socket, PID file and log in
# $1 and its data root in $2, and waits for it to answer.
start_dockerd() {
    local dir=$1 root=$2
    dockerd --bridge=none --iptables=false --ip-masq=false --data-root "$root" --exec-root "$dir/docker-exec" \
        -H "unix://$dir/docker.sock" --pidfile "$dir/dockerd.pid" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 120); do
        DOCKER_HOST="unix://$dir/docker.sock" /usr/bin/docker info >/dev/null 2>&1 && return
        sleep 0.5
    done
    echo "dockerd did not start; its log:" >&2
    cat "$dir/dockerd.log" >&2
    exit 1
}

# Stops the dockerd start_dockerd started in $1, by PID, and waits for it to exit.
stop_dockerd() {
    [[ -f $1/dockerd.pid ]] || return 0
    local pid
    pid=$(cat "$1/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
}

# A new ext4 mounted at $work/NAME (unmount_under "$work" removes it).
make_ext4() { # NAME SIZE [mkfs.ext4 options]
    local name=$1 size=$2 device; shift 2
    # Direct I/O, so that `sync` means on disk and not in the backing file's page cache, and
    # initialised in full now, so that no background zeroing of inode tables runs in a build.
    truncate -s "$size" "$work/$name.ext4"
    device=$(losetup --find --show --direct-io=on --sector-size 4096 "$work/$name.ext4")
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$@" "$device"
    mkdir "$work/$name"
    mount "$device" "$work/$name"
    # Detaching a mounted device only marks it to go when it is unmounted.
    losetup --detach "$device"
}

# Builds the rbuild release binary and sets $bin to it; `RBUILD_BIN=PATH` measures that binary
# instead (an earlier commit's, for a before/after in the same conditions).
build_rbuild() {
    if [[ -n ${RBUILD_BIN:-} ]]; then
        bin=$RBUILD_BIN
        return
    fi
    cargo build --release --quiet -p rbuild
    bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/rbuild
}

# Stops the registry start_registry_with_busybox started under $1, by PID.
stop_registry() {
    [[ -f $1/registry.pid ]] && kill "$(cat "$1/registry.pid")" 2>/dev/null || true
}

# Unmounts whatever is still mounted under $1 (buildah's overlay storage keeps image mounts).
unmount_under() {
    { grep " $1/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r mount; do
        umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
    done
}

# Makes $work, a scratch directory named after $1 under $TMPDIR, and arranges that on exit the
# processes whose PIDs the script adds to $pids are stopped and $work is removed.
make_workdir() {
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/$1.XXXXXX")
    pids=()
    trap cleanup_workdir EXIT
}
cleanup_workdir() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# Waits for the registry at URL $1 to answer /v2/.
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "$1/v2/" && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# For servers a script's start() recorded as PID_<NAME> and URL_<NAME>: stop one by PID, or
# print its URL.
stop() { local pid_var="PID_$1"; kill "${!pid_var}" 2>/dev/null || true; wait "${!pid_var}" 2>/dev/null || true; }
url() { local v="URL_$1"; echo "${!v}"; }

# Figures side by side: report NAME UNIT RBUILD DISTRIBUTION [lower] prints a row with the
# ratio (> 1 means rbuild is better) and keeps it in $results for a summary.
results=()
report() { # NAME UNIT RBUILD DISTRIBUTION [lower-is-better]
    local ratio
    if [[ ${5:-} == lower ]]; then ratio=$(awk "BEGIN {printf \"%.2f\", $4/$3}"); else ratio=$(awk "BEGIN {printf \"%.2f\", $3/$4}"); fi
    results+=("$(printf '%-38s %12s %12s %8sx  (%s)' "$1" "$3" "$4" "$ratio" "$2")")
    echo "${results[-1]}"
}

# Absolute location + digest parameter, for registries that add their own query (distribution).
finish_url() { local base=$1 loc=$2 digest=$3; [[ $loc == http* ]] || loc="$base$loc"; [[ $loc == *\?* ]] && echo "$loc&digest=$digest" || echo "$loc?digest=$digest"; }
upload_file() { # BASE REPO FILE DIGEST -> seconds
    local base=$1 repo=$2 file=$3 digest=$4 loc start end
    loc=$(curl -sf -X POST -D - -o /dev/null "$base/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
    start=$(date +%s.%N)
    curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$file" "$(finish_url "$base" "$loc" "$digest")"
    end=$(date +%s.%N)
    awk "BEGIN {print $end - $start}"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# Seconds the command takes.
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk "BEGIN {print $t1 - $t0}"; }

# Pushes a small image (a config and a one-line layer) to BASE as bench/app:tag1 … tagN, for
# the request figures: push_tagged_image BASE N.
push_tagged_image() {
    local base=$1 tags=$2 config='{"architecture":"amd64","os":"linux"}' layer="bench layer" content d loc i
    for content in "$config" "$layer"; do
        d="sha256:$(printf %s "$content" | openssl dgst -sha256 | awk '{print $NF}')"
        loc=$(curl -sf -X POST -D - -o /dev/null "$base/v2/bench/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
        printf %s "$content" | curl -sf -o /dev/null -X PUT -H "Content-Type: application/octet-stream" \
            --data-binary @- "$(finish_url "$base" "$loc" "$d")"
    done
    local config_digest layer_digest manifest
    config_digest="sha256:$(printf %s "$config" | openssl dgst -sha256 | awk '{print $NF}')"
    layer_digest="sha256:$(printf %s "$layer" | openssl dgst -sha256 | awk '{print $NF}')"
    manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":${#config}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$layer_digest\",\"size\":${#layer}}]}"
    for i in $(seq "$tags"); do
        printf %s "$manifest" | curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
            --data-binary @- "$base/v2/bench/app/manifests/tag$i"
    done
}
