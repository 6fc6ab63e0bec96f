#!/usr/bin/env bash
# Stops every node up.sh started, front to back: the load balancer, then the app nodes
# (they drain), then the databases (a clean shutdown); a node still running after a
# minute is killed. Fails unless every node's process is gone at the end. The run
# directory (data and logs) stays, for reading; the next up.sh starts afresh.
#
# Usage: examples/distributed/down.sh   (WHARF_EXAMPLE_RUN: the run directory, as for up.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
# Waits are this many looks, 0.1 s apart: a minute.
polls=600

[ -d "$run" ] || { echo "down: nothing to stop (no $run)"; exit 0; }

# running NAME: the node's pid, if that process runs and is the node (its command line
# names the run directory: a pid file left from an old run may name another process by
# now). A zombie has no command line, so it counts as gone.
running() {
    local pid
    pid="$(cat "$run/$1.pid" 2>/dev/null)" || return 1
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$run/" &&
        echo "$pid"
}

# stop NAME...: SIGTERM to each running node, then waits for all of them; SIGKILL to
# those left after a minute.
stop() {
    local name pid
    for name in "$@"; do
        if pid="$(running "$name")"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    gone "$polls" "$@" && return 0
    for name in $left; do
        echo "down: $name still running after $((polls / 10)) s; killing it" >&2
        kill -KILL "$(running "$name")" 2>/dev/null || true
    done
    gone 50 "$@" || true
}

# gone LOOKS NAME...: waits until none of the nodes runs; sets $left to those that do.
gone() {
    local looks="$1" name
    shift
    for _ in $(seq 1 "$looks"); do
        left=""
        for name in "$@"; do running "$name" >/dev/null && left+=" $name"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    return 1
}

stop lb
stop app-1 app-2
stop db-replica db-primary

left=""
for pid_file in "$run"/*.pid; do
    [ -e "$pid_file" ] || continue
    name="$(basename "$pid_file" .pid)"
    if pid="$(running "$name")"; then
        left+=" $name (pid $pid)"
    else
        rm -f "$pid_file"
    fi
done
[ -z "$left" ] || { echo "down: still running:$left" >&2; exit 1; }
echo "down: every node stopped (logs and data stay in $run)"
