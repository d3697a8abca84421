#!/usr/bin/env bash
# A local S3 server for memento's tests: moto's server, from PyPI, on
# 127.0.0.1.
#
#   scripts/moto.sh start [PIDFILE [PORT]]
#       Installs moto (once) into a virtual environment at
#       ${CARGO_TARGET_DIR:-target}/moto-venv, starts `moto_server` on PORT
#       (default: a free port) in the background, waits until it answers,
#       writes its PID to PIDFILE (default:
#       ${CARGO_TARGET_DIR:-target}/moto.pid) and prints its URL,
#       http://127.0.0.1:PORT, on stdout (nothing else goes to stdout).
#       The server's log goes beside the PID file (PIDFILE with .log).
#       Environment variables reach the server (INITIAL_NO_AUTH_ACTION_COUNT=0
#       makes it check every request's credentials).
#   scripts/moto.sh stop [PIDFILE]
#       Stops the server whose PID is in PIDFILE, and removes the file and
#       the server's log.
#
# moto keeps everything in memory: a stopped server forgets its buckets.
# Needs only Python 3 (with venv and pip) and access to PyPI for the first
# install (31 packages, about 20 s); later starts reuse the environment.
# Several test binaries may start servers at once: the install runs under
# an exclusive lock (flock) on ${CARGO_TARGET_DIR:-target}/moto-venv.lock,
# and each caller names its own PID file.
set -euo pipefail

MOTO_REQUIREMENTS=("moto[s3]==5.2.5" "flask" "flask-cors")
# Written into the environment once the install completed: an environment
# without it (an install killed half-way) is made again.
READY_MARK="memento-moto-ready: ${MOTO_REQUIREMENTS[*]}"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case "$target" in
/*) ;;
*) target="$repo/$target" ;;
esac
venv="$target/moto-venv"

die() {
    echo "moto.sh: $*" >&2
    exit 1
}

python=$(command -v python3 || true)
[ -n "$python" ] || die "python3 is not installed: install Python 3 (with its venv module and pip)"

install_locked() {
    if [ -f "$venv/.ready" ] && [ "$(cat "$venv/.ready")" = "$READY_MARK" ] &&
        [ -x "$venv/bin/moto_server" ]; then
        return 0
    fi
    echo "moto.sh: installing ${MOTO_REQUIREMENTS[*]} into $venv (once; about 20 s)" >&2
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
        rm -rf "$venv"
        die "python3 -m venv failed: install Python's venv module (on Debian and Ubuntu: apt-get install python3-venv)"
    fi
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "${MOTO_REQUIREMENTS[@]}" >&2; then
        rm -rf "$venv"
        die "pip could not install ${MOTO_REQUIREMENTS[*]}: check that PyPI is reachable (or set PIP_INDEX_URL)"
    fi
    [ -x "$venv/bin/moto_server" ] || die "the install has no $venv/bin/moto_server"
    echo "$READY_MARK" >"$venv/.ready"
}

# The install under an exclusive lock: two callers never build one
# environment together; the second finds it ready.
install() {
    mkdir -p "$target"
    local lock="$target/moto-venv.lock"
    if command -v flock >/dev/null; then
        exec 9>"$lock"
        flock 9
        install_locked
        flock -u 9
        exec 9>&-
    else
        # No flock(1) (util-linux): the same lock through Python.
        "$python" - "$lock" "$0" <<'EOF'
import fcntl, subprocess, sys
with open(sys.argv[1], "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    sys.exit(subprocess.call(["bash", sys.argv[2], "install-locked"]))
EOF
    fi
}

# Is the process running (a zombie is not)?
alive() {
    if [ -r "/proc/$1/stat" ]; then
        ! grep -q ') Z' "/proc/$1/stat"
    else
        kill -0 "$1" 2>/dev/null
    fi
}

free_port() {
    "$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

answers() {
    "$venv/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=1)
except urllib.error.HTTPError:
    pass  # an HTTP answer, whatever its status: the server is up
except Exception:
    sys.exit(1)
EOF
}

start() {
    local pidfile=${1:-$target/moto.pid} port=${2:-}
    install
    local log="${pidfile%.pid}.log"
    if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
        die "a server is running already with PID $(cat "$pidfile") (from $pidfile): stop it first, or name another PID file"
    fi
    mkdir -p "$(dirname "$pidfile")"
    local attempt
    for attempt in 1 2 3; do
        local p=${port:-$(free_port)}
        local url="http://127.0.0.1:$p"
        "$venv/bin/moto_server" -H 127.0.0.1 -p "$p" >"$log" 2>&1 </dev/null &
        local pid=$!
        echo "$pid" >"$pidfile"
        local waited=0
        while [ "$waited" -lt 300 ]; do
            alive "$pid" || break
            if answers "$url"; then
                echo "$url"
                return 0
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$pidfile"
        # A port given by the caller is not tried again; a free port taken
        # meanwhile by another program is.
        if [ -n "$port" ]; then
            break
        fi
    done
    echo "moto.sh: moto_server did not answer; its log ($log):" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
}

stop() {
    local pidfile=${1:-$target/moto.pid}
    [ -f "$pidfile" ] || die "no PID file $pidfile: is the server started?"
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        # Wait (at most 5 s) until it is gone, so that its port is free.
        local i
        for i in $(seq 50); do
            alive "$pid" || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile" "${pidfile%.pid}.log"
}

case "${1:-}" in
start) start "${2:-}" "${3:-}" ;;
stop) stop "${2:-}" ;;
install-locked) install_locked ;;
*)
    echo "usage: $0 start [PIDFILE [PORT]] | stop [PIDFILE]" >&2
    exit 2
    ;;
esac
