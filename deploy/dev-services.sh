#!/usr/bin/env bash
# Local dev services for deltawire: redis-server and a MongoDB-wire-compatible
# FerretDB (SQLite backend), both on 127.0.0.1.
#
#   deploy/dev-services.sh up      start what is not running, wait until the
#                                  ports accept connections, print the URIs
#   deploy/dev-services.sh down    stop the processes this script started
#   deploy/dev-services.sh status  show both; exit 1 if any is down
#
# Environment:
#   REDIS_PORT (6379), MONGO_PORT (27017)      ports used by `up`
#   DELTAWIRE_RUN_DIR (<repo>/.run)            data, logs and pid files
#   DELTAWIRE_WAIT_S (30)                      how long `up` waits per service
#
# `up` prints `export MONGO_URI=...` and `export REDIS_URI=...` on stdout:
#   eval "$(deploy/dev-services.sh up)"
# Run deploy/install-test-deps.sh first on a fresh machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
run_dir="${DELTAWIRE_RUN_DIR:-$repo/.run}"
wait_s="${DELTAWIRE_WAIT_S:-30}"
host=127.0.0.1

say() { echo "dev-services: $*" >&2; }

port_open() { # host port
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Process-title marker that must appear in /proc/PID/cmdline, so that a
# recycled PID is never mistaken for (and never killed as) our service.
marker() {
    case "$1" in
        redis) echo "redis-server" ;;
        mongo) echo "ferretdb-v1.24.2" ;;
    esac
}

# True while PID exists and is not a zombie.
alive() { # pid
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Prints the PID from NAME.pid if that process is alive and is ours.
our_pid() { # name
    local f="$run_dir/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid="$(<"$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" || return 1
    echo "$pid"
}

port_of() { # name default
    local f="$run_dir/$1.port"
    if [[ -f "$f" ]]; then cat "$f"; else echo "$2"; fi
}

uri() { # name port
    case "$1" in
        redis) echo "redis://$host:$2/0" ;;
        mongo) echo "mongodb://$host:$2/" ;;
    esac
}

start() { # name port cmd...
    local name="$1" port="$2" pid deadline
    shift 2
    if pid="$(our_pid "$name")"; then
        say "$name already running (pid $pid, port $(port_of "$name" "$port"))"
        return 0
    fi
    rm -f "$run_dir/$name.pid" "$run_dir/$name.port"
    if port_open "$host" "$port"; then
        say "$name: port $host:$port is already in use by another process; set a different port"
        return 1
    fi
    local log="$run_dir/$name.log"
    # nohup execs the command, so $! is the server's own PID.
    nohup "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$run_dir/$name.pid"
    echo "$port" >"$run_dir/$name.port"

    deadline=$((SECONDS + wait_s))
    until port_open "$host" "$port"; do
        if ! alive "$pid"; then
            say "$name exited during start-up; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            rm -f "$run_dir/$name.pid" "$run_dir/$name.port"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "$name did not accept connections on $host:$port within ${wait_s}s; see $log"
            return 1
        fi
        sleep 0.1
    done
    say "$name started (pid $pid, $host:$port, log $log)"
}

stop() { # name
    local name="$1" pid deadline
    if ! pid="$(our_pid "$name")"; then
        if [[ -f "$run_dir/$name.pid" ]]; then
            say "$name not running (removing stale pid file)"
        else
            say "$name not running"
        fi
        rm -f "$run_dir/$name.pid" "$run_dir/$name.port"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name (pid $pid) did not stop after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run_dir/$name.pid" "$run_dir/$name.port"
    say "$name stopped (pid $pid)"
}

status_one() { # name default-port
    local name="$1" port pid
    port="$(port_of "$name" "$2")"
    if pid="$(our_pid "$name")" && port_open "$host" "$port"; then
        echo "$name: up   pid $pid  $(uri "$name" "$port")"
        return 0
    fi
    if [[ -n "${pid:-}" ]]; then
        echo "$name: down (pid $pid alive but $host:$port not accepting connections)"
    else
        echo "$name: down"
    fi
    return 1
}

cmd_up() {
    local redis_port="${REDIS_PORT:-6379}" mongo_port="${MONGO_PORT:-27017}" ferretdb
    if ! command -v redis-server >/dev/null 2>&1; then
        say "redis-server not found; run deploy/install-test-deps.sh"
        return 1
    fi
    ferretdb="$("$here/ferretdb/build.sh" | tail -n 1)"
    mkdir -p "$run_dir/redis-data" "$run_dir/ferretdb-data"
    run_dir="$(cd "$run_dir" && pwd)"

    start redis "$redis_port" redis-server \
        --bind "$host" --port "$redis_port" --protected-mode yes \
        --daemonize no --dir "$run_dir/redis-data" --logfile "" --loglevel warning
    start mongo "$mongo_port" "$ferretdb" \
        -listen "$host:$mongo_port" -dir "$run_dir/ferretdb-data" -log-level warn

    echo "export MONGO_URI=$(uri mongo "$(port_of mongo "$mongo_port")")"
    echo "export REDIS_URI=$(uri redis "$(port_of redis "$redis_port")")"
}

cmd_down() {
    [[ -d "$run_dir" ]] || { say "nothing to stop ($run_dir does not exist)"; return 0; }
    stop mongo
    stop redis
}

cmd_status() {
    local rc=0
    status_one redis "${REDIS_PORT:-6379}" || rc=1
    status_one mongo "${MONGO_PORT:-27017}" || rc=1
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
