# shellcheck shell=bash
# The real engines the registry's cluster backends run on, for tests: a one-node Garage (S3)
# and a PostgreSQL 15 server, each in a directory of its own on free loopback ports.
#
# Sourced by scripts/test, and usable by hand:
#
#     source scripts/engines.sh
#     engines_start /tmp/engines      # starts both, exports the RBUILD_TEST_* variables
#     ...                             # cargo test, rbuild serve --config ..., psql, curl
#     engines_stop                    # stops both by PID, removes nothing but the processes
#
# engines_start exports the contract the spec tests read:
#   RBUILD_TEST_POSTGRES_URL          postgres://postgres@127.0.0.1:PORT/postgres (trust auth)
#   RBUILD_TEST_S3_ENDPOINT           http://127.0.0.1:PORT
#   RBUILD_TEST_S3_REGION             garage
#   RBUILD_TEST_S3_BUCKET             a bucket the key below owns
#   RBUILD_TEST_S3_ACCESS_KEY_ID, RBUILD_TEST_S3_SECRET_ACCESS_KEY
#   RBUILD_TEST_GARAGE                the garage binary (tests start private instances with it)
#   RBUILD_TEST_PG_BIN                PostgreSQL's bin directory (the same, for private servers)
#
# The per-engine functions (engines_pg_*, engines_garage_*) keep their state in files in the
# engine's directory (port, pid, …), so a test harness can start, stop and restart a private
# instance through them: `bash -c 'source scripts/engines.sh && engines_pg_start "$0"' DIR`.
#
# The Garage binary is $RBUILD_GARAGE, else ~/.cache/rbuild/tools/garage/bin/garage (where
# scripts/test builds it once per machine).

ENGINES_PG_BIN=${RBUILD_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
ENGINES_GARAGE=${RBUILD_GARAGE:-$HOME/.cache/rbuild/tools/garage/bin/garage}

# $1 (default 1) distinct loopback TCP ports nobody listens on, one a line, below Linux's
# ephemeral range (32768-60999) so that no outgoing connection holds one.
engines_free_ports() {
    local count=${1:-1} port taken=" "
    for _ in $(seq 500); do
        port=$((20000 + RANDOM % 12000))
        [[ $taken == *" $port "* ]] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        taken+="$port "
        echo "$port"
        count=$((count - 1))
        ((count > 0)) || return 0
    done
    echo "engines: no free port found" >&2
    return 1
}

# Random lowercase hex of $1 bytes (Garage's rpc_secret is 32 bytes).
engines_hex() {
    od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# Waits up to $1 seconds for the command that follows to succeed.
engines_wait() {
    local seconds=$1
    shift
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    "$@" >/dev/null 2>&1
}

# Sends $2 (a signal name) to the PID in file $1 and waits up to 30 s for it to exit, then
# SIGKILLs it.
engines_kill_pidfile() {
    local pidfile=$1 signal=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses to run as root).
engines_as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Creates a cluster in $1 (made, and owned by postgres when we are root) on a free port.
# Its superuser is `postgres`, authenticated by trust: a test server on loopback only.
engines_pg_init() {
    local dir=$1
    mkdir -p "$dir" || return 1
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    if ! engines_as_postgres test -w "$dir"; then
        echo "engines: the postgres user cannot write $dir (make its parents searchable)" >&2
        return 1
    fi
    engines_as_postgres "$ENGINES_PG_BIN/initdb" -D "$dir/data" -A trust -U postgres \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    engines_free_ports >"$dir/port"
}

# Starts (or starts again) the server of $1 on its port, its socket in $1; waits until it
# accepts connections. fsync is off: the data are thrown away after the run.
engines_pg_start() {
    local dir=$1 port
    port=$(cat "$dir/port") || return 1
    engines_as_postgres "$ENGINES_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c full_page_writes=off" \
        start >/dev/null || {
        echo "engines: PostgreSQL did not start; its log:" >&2
        tail -n 30 "$dir/postgres.log" >&2
        return 1
    }
    head -n 1 "$dir/data/postmaster.pid" >"$dir/pid"
    engines_wait 30 "$ENGINES_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
}

# Stops the server of $1 by its PID (SIGINT: PostgreSQL's fast shutdown).
engines_pg_stop() {
    engines_kill_pidfile "$1/pid" INT
}

# The URL of the server of $1, as its superuser, on the `postgres` database.
engines_pg_url() {
    echo "postgres://postgres@127.0.0.1:$(cat "$1/port")/postgres"
}

# Writes $1/garage.toml: one node, replication factor 1, sqlite metadata, RPC, S3 and admin
# APIs on free loopback ports, a fresh RPC secret.
engines_garage_init() {
    local dir=$1 ports rpc s3 admin
    mkdir -p "$dir" || return 1
    mapfile -t ports < <(engines_free_ports 3)
    ((${#ports[@]} == 3)) || return 1
    rpc=${ports[0]} s3=${ports[1]} admin=${ports[2]}
    echo "$s3" >"$dir/s3_port"
    echo "$admin" >"$dir/admin_port"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(engines_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(engines_hex 16)"
EOF
}

# The garage CLI on the node of $1.
engines_garage() {
    local dir=$1
    shift
    "$ENGINES_GARAGE" -c "$dir/garage.toml" "$@"
}

# Whether the node of $1 reports itself healthy (it needs a layout for that).
engines_garage_healthy() {
    curl -fsS -o /dev/null "http://127.0.0.1:$(cat "$1/admin_port")/health"
}

# Starts (or starts again) the node of $1; waits until its RPC answers and, once the layout
# exists (engines_garage_setup ran), until it is healthy.
engines_garage_start() {
    local dir=$1
    if [[ ! -x $ENGINES_GARAGE ]]; then
        echo "engines: no garage binary at $ENGINES_GARAGE (set RBUILD_GARAGE; scripts/test builds it)" >&2
        return 1
    fi
    RUST_LOG=${ENGINES_GARAGE_LOG:-garage=info} \
        "$ENGINES_GARAGE" -c "$dir/garage.toml" server >>"$dir/garage.log" 2>&1 &
    echo $! >"$dir/pid"
    if ! engines_wait 60 engines_garage "$dir" status ||
        { [[ -f $dir/key_id ]] && ! engines_wait 60 engines_garage_healthy "$dir"; }; then
        echo "engines: Garage did not start; its log:" >&2
        tail -n 30 "$dir/garage.log" >&2
        return 1
    fi
}

# Gives the new node of $1 a one-node layout, creates bucket $2 and a key owning it; the key
# goes to $1/key_id and $1/secret_key.
engines_garage_setup() {
    local dir=$1 bucket=$2 node key
    node=$(engines_garage "$dir" node id -q) || return 1
    engines_garage "$dir" layout assign -z dc1 -c 1G "${node%%@*}" >/dev/null &&
        engines_garage "$dir" layout apply --version 1 >/dev/null &&
        engines_garage "$dir" bucket create "$bucket" >/dev/null || return 1
    key=$(engines_garage "$dir" key create "$bucket-key") || return 1
    awk '/^Key ID:/ {print $3}' <<<"$key" >"$dir/key_id"
    awk '/^Secret key:/ {print $3}' <<<"$key" >"$dir/secret_key"
    if [[ ! -s $dir/key_id || ! -s $dir/secret_key ]]; then
        echo "engines: cannot read the key garage created:" >&2
        echo "$key" >&2
        return 1
    fi
    engines_garage "$dir" bucket allow --read --write --owner "$bucket" --key "$(cat "$dir/key_id")" >/dev/null &&
        engines_wait 60 engines_garage_healthy "$dir"
}

# Stops the node of $1 by its PID (SIGTERM).
engines_garage_stop() {
    engines_kill_pidfile "$1/pid" TERM
}

# Starts PostgreSQL in $1/postgres and Garage in $1/garage, and exports the RBUILD_TEST_*
# variables. Makes $1 searchable by others, as the postgres user must reach its directory.
engines_start() {
    local dir=$1 started=$SECONDS
    mkdir -p "$dir" && chmod a+x "$dir" || return 1
    ENGINES_DIR=$dir
    engines_pg_init "$dir/postgres" && engines_pg_start "$dir/postgres" || return 1
    engines_garage_init "$dir/garage" && engines_garage_start "$dir/garage" &&
        engines_garage_setup "$dir/garage" rbuild-test || return 1
    export RBUILD_TEST_POSTGRES_URL
    RBUILD_TEST_POSTGRES_URL=$(engines_pg_url "$dir/postgres")
    export RBUILD_TEST_S3_ENDPOINT="http://127.0.0.1:$(cat "$dir/garage/s3_port")"
    export RBUILD_TEST_S3_REGION=garage
    export RBUILD_TEST_S3_BUCKET=rbuild-test
    export RBUILD_TEST_S3_ACCESS_KEY_ID
    RBUILD_TEST_S3_ACCESS_KEY_ID=$(cat "$dir/garage/key_id")
    export RBUILD_TEST_S3_SECRET_ACCESS_KEY
    RBUILD_TEST_S3_SECRET_ACCESS_KEY=$(cat "$dir/garage/secret_key")
    export RBUILD_TEST_GARAGE=$ENGINES_GARAGE
    export RBUILD_TEST_PG_BIN=$ENGINES_PG_BIN
    echo "engines: PostgreSQL at $RBUILD_TEST_POSTGRES_URL, Garage at $RBUILD_TEST_S3_ENDPOINT" \
        "(bucket $RBUILD_TEST_S3_BUCKET), up in $((SECONDS - started)) s"
}

# Stops what engines_start started, by PID.
engines_stop() {
    [[ -n ${ENGINES_DIR:-} ]] || return 0
    engines_garage_stop "$ENGINES_DIR/garage"
    engines_pg_stop "$ENGINES_DIR/postgres"
}
