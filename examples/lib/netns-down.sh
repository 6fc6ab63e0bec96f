# shellcheck shell=bash
# The teardown every namespaced example's down.sh shares; sourced, never run.
# The caller sets `run` (the run directory), `prefix` (of the namespaces' names) and
# `nodes` (those up.sh makes, beside the switch), and defines `stop_nodes`, which stops
# its processes front to back with `stop NAME...`. Then: whatever still runs in the
# namespaces is ended, they are deleted with their interfaces, the client's /etc/netns
# entry goes, and it fails unless all is gone.

# The namespaces' names are this prefix and a node's name: only those are deleted.
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] ||
    { echo "WHARF_EXAMPLE_PREFIX must be letters, digits, - _ . (got '$prefix')" >&2; exit 1; }
namespaces=(switch "${nodes[@]}")
namespaces=("${namespaces[@]/#/$prefix}")

# Waits are this many looks, 0.1 s apart: a minute.
polls=600

# running NAME: the process's pid, if it runs and is the one up.sh started (its command
# line names the run directory: a pid file left from an old run may name another
# process by now). A zombie has no command line, so it counts as gone.
running() {
    local pid cmdline
    pid="$(cat "$run/$1.pid" 2>/dev/null)" || return 1
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmdline" == *"$run/"* ]] && echo "$pid"
}

# stop NAME...: SIGTERM to each running process, then waits for all of them; SIGKILL
# to those left after a minute.
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

# gone LOOKS NAME...: waits until none of them runs; sets $left to those that do.
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

# exists NS: the namespace is there.
exists() { [[ " $(ip netns list 2>/dev/null | awk '{print $1}' | tr '\n' ' ') " == *" $1 "* ]]; }

stopped=0
if [ -d "$run" ]; then
    for pid_file in "$run"/*.pid; do
        [ -e "$pid_file" ] || continue
        running "$(basename "$pid_file" .pid)" >/dev/null && stopped=1
    done
    stop_nodes
fi

# Whatever still runs in the example's namespaces is the example's too (a helper such
# as keepalived's VRRP process, or a process up.sh started but had no time to record):
# SIGTERM, a few seconds, SIGKILL. A namespace is deleted only once it is empty.
left=""
for ns in "${namespaces[@]}"; do
    exists "$ns" || continue
    stopped=1
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    if [ -n "$pids" ]; then
        echo "down: ending what still runs in $ns (pids $(echo "$pids" | tr '\n' ' '))" >&2
        # shellcheck disable=SC2086 # a list of pids
        kill -TERM $pids 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            sleep 0.1
        done
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    if [ -n "$pids" ]; then
        left+=" $ns (pids $(echo "$pids" | tr '\n' ' '))"
        continue
    fi
    # Deleting the namespace deletes its interfaces: the veth pairs, the bridge.
    ip netns delete "$ns"
done

# The client's resolv.conf, and /etc/netns and /run/netns if up.sh's were the first.
client_etc="/etc/netns/${prefix}client"
if [ -e "$client_etc" ]; then
    rm -f "$client_etc/resolv.conf"
    rmdir "$client_etc" 2>/dev/null || echo "down: $client_etc holds other files: left" >&2
fi
# (A copy of the example that made them marked them; the last one down removes them.)
if [ -e /etc/netns/.wharf-example ] && [ "$(ls -A /etc/netns)" = .wharf-example ]; then
    rm -f /etc/netns/.wharf-example && rmdir /etc/netns
fi
if [ -e /run/.wharf-example-netns ] && { [ ! -d /run/netns ] || [ -z "$(ls -A /run/netns)" ]; }; then
    # `ip netns add` mounts /run/netns on itself (shared), the first time.
    if mountpoint -q /run/netns; then umount /run/netns 2>/dev/null || true; fi
    if ! mountpoint -q /run/netns; then
        rmdir /run/netns 2>/dev/null || true
        rm -f /run/.wharf-example-netns
    fi
fi

for pid_file in "$run"/*.pid; do
    [ -e "$pid_file" ] || continue
    name="$(basename "$pid_file" .pid)"
    if pid="$(running "$name")"; then
        left+=" $name (pid $pid)"
    else
        rm -f "$pid_file"
    fi
done
for ns in "${namespaces[@]}"; do
    exists "$ns" && case "$left" in *" $ns "*) ;; *) left+=" $ns (namespace)" ;; esac
done
[ -z "$left" ] || { echo "down: still there:$left" >&2; exit 1; }
if [ "$stopped" = 0 ]; then
    echo "down: nothing was running (no ${prefix}* namespaces)"
elif [ -d "$run" ]; then
    echo "down: every process stopped, namespaces ${prefix}* deleted (logs and data stay in $run)"
else
    echo "down: stopped what ran in the ${prefix}* namespaces and deleted them (no run directory" \
        "$run: was WHARF_EXAMPLE_RUN set for up.sh?)"
fi
