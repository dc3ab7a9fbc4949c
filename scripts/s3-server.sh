#!/usr/bin/env bash
# The moto S3 server (PyPI moto 5.2.5) on loopback, for the replication tests.
#
#   scripts/s3-server.sh install    create TARGET/moto-venv and pip install moto (once)
#   scripts/s3-server.sh start      install if needed, start the server on a free port,
#                                   wait until it answers, create the bucket `iqdb-test`,
#                                   write the endpoint to TARGET/moto/endpoint and print
#                                   `export IQDB_S3_ENDPOINT=http://127.0.0.1:PORT`
#                                   (a server already running is reused)
#   scripts/s3-server.sh stop       stop it
#   scripts/s3-server.sh status     print the endpoint, exit 1 when not running
#   scripts/s3-server.sh reset      POST /moto-api/reset (drops every bucket)
#
# TARGET is $CARGO_TARGET_DIR or the workspace's target/; the state (pid,
# endpoint, log) lives in TARGET/moto, or $IQDB_MOTO_STATE when set. The tests find the
# server through $IQDB_S3_ENDPOINT or TARGET/moto/endpoint, and run this
# script's `start` themselves when neither answers.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=${IQDB_MOTO_VENV:-$target/moto-venv}
# IQDB_MOTO_STATE: another state directory, for a private server (the
# freeze test SIGSTOPs one of its own).
state=${IQDB_MOTO_STATE:-$target/moto}
moto_version=5.2.5
mkdir -p "$state"

say() { echo "s3-server: $*" >&2; }

alive() { # endpoint
    curl -sf -o /dev/null --max-time 5 "$1/moto-api/"
}

running_endpoint() {
    [[ -f $state/pid && -f $state/endpoint ]] || return 1
    local pid endpoint
    pid=$(cat "$state/pid")
    endpoint=$(cat "$state/endpoint")
    kill -0 "$pid" 2>/dev/null && alive "$endpoint" && echo "$endpoint"
}

install() {
    if [[ -x $venv/bin/moto_server ]] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
        return 0
    fi
    say "installing moto $moto_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[s3]==$moto_version" flask flask-cors
}

start() {
    local endpoint
    if endpoint=$(running_endpoint); then
        echo "export IQDB_S3_ENDPOINT=$endpoint"
        return 0
    fi
    install
    rm -f "$state/endpoint" "$state/pid"
    : > "$state/server.log"
    setsid "$venv/bin/moto_server" -H 127.0.0.1 -p 0 >> "$state/server.log" 2>&1 < /dev/null 9>&- &
    local pid=$!
    echo "$pid" > "$state/pid"
    local port=""
    for _ in $(seq 1 300); do
        port=$(grep -o 'Running on http://127\.0\.0\.1:[0-9]*' "$state/server.log" | head -1 | sed 's/.*://') || true
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || { say "moto_server exited:"; cat "$state/server.log" >&2; return 1; }
        sleep 0.1
    done
    [[ -n $port ]] || { say "moto_server printed no port"; cat "$state/server.log" >&2; return 1; }
    endpoint="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        alive "$endpoint" && break
        sleep 0.1
    done
    alive "$endpoint" || { say "moto_server does not answer on $endpoint"; return 1; }
    curl -sf -o /dev/null -X PUT "$endpoint/iqdb-test"
    echo "$endpoint" > "$state/endpoint"
    say "moto $moto_version running on $endpoint (pid $pid, log $state/server.log)"
    echo "export IQDB_S3_ENDPOINT=$endpoint"
}

stop() {
    if [[ -f $state/pid ]]; then
        local pid
        pid=$(cat "$state/pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
            say "stopped (pid $pid)"
        fi
    fi
    rm -f "$state/pid" "$state/endpoint"
}

cmd=${1:-}
case $cmd in
    install|start|stop)
        # One at a time (test binaries may start it concurrently).
        exec 9> "$state/lock"
        flock 9
        "$cmd"
        ;;
    status)
        running_endpoint || { say "not running"; exit 1; }
        ;;
    reset)
        endpoint=$(running_endpoint) || { say "not running"; exit 1; }
        curl -sf -o /dev/null -X POST "$endpoint/moto-api/reset"
        ;;
    *)
        echo "usage: $0 install|start|stop|status|reset" >&2
        exit 2
        ;;
esac
