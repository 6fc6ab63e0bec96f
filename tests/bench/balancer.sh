#!/usr/bin/env bash
# Benchmark: wharf's load balancer against HAProxy (from Debian), in one run.
#
# The proxy alone on CPU 0 with one thread (`wharf serve --workers 1`, HAProxy
# `nbthread 1`); the backends (tests/src/bin/bench_backend.rs: hyper answering hello
# world, one worker each) and the load generators on CPU 1: wrk for requests/s,
# tests/src/bin/bench_client.rs for latencies (each request's own). Both proxies
# balance over the same two backends, keep connections to them alive, and add
# X-Forwarded-For/-Proto/-Host and a request id (wharf does so always; HAProxy is told
# to, for the same work).
#
# 1. Round robin over two fast backends: requests/s at 64 connections and the proxy's
#    CPU time per request; at one connection, p50 and p99 against calling a backend
#    directly (the latency the proxy adds).
# 2. One of the two backends answers 50 ms late: p50/p99/p99.9 at 16 connections of
#    wharf's least_latency (and least_connections) against HAProxy's leastconn and
#    roundrobin, and the share of requests the slow backend got.
#
# Usage: tests/bench/balancer.sh [DURATION_SECONDS] [ROUNDS]   (default 10 and 2; each
# measurement also has a 2 s warm-up; the first scenario runs ROUNDS times, alternating
# the proxies). Builds in release into $CARGO_TARGET_DIR (default target/).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
rounds="${2:-2}"
slow_ms=50

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    (
        # Keep the package from starting its system service: only our own runs are wanted.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    )
fi
haproxy="$(command -v haproxy || echo /usr/sbin/haproxy)"
cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin bench-backend \
    --bin bench-client
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

source "$repo/tests/bench/common.sh"
conns=64   # for load (wrk): the throughput runs

# The machine may be shared (builds of others on both CPUs): from here on this script
# and what it starts (proxies, backends, wrk) run at the highest priority, so others
# take little of their CPU time; both proxies get the same. With autogroups, a nice
# value only ranks processes within their group, so the group's is raised as well.
if [ "$(id -u)" -eq 0 ]; then
    renice -n -19 -p $$ >/dev/null
    [ -w /proc/$$/autogroup ] && echo -19 >/proc/$$/autogroup
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# stop PID: ends one server of the run (before the next takes CPU 0).
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# start_backend NAME [DELAY_MS]: a backend on CPU 1 (`start` pins to CPU 0; the inner
# taskset moves it before it execs), sets $addr and $pid.
start_backend() { start "$1" taskset -c 1 "$bin/bench-backend" 127.0.0.1:0 "${2:-0}"; }

# served ADDR: how many requests the backend at ADDR has answered.
served() { curl -sf "http://$1/served"; }

# free_port: a port of 127.0.0.1 that was free a moment ago (HAProxy cannot print the
# port it got for port 0).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_wharf ALGORITHM BACKEND...: wharf balancing over the backends; sets $addr, $pid.
start_wharf() {
    local algorithm="$1" servers="" b
    shift
    for b in "$@"; do servers+="{ address = \"$b\" }, "; done
    mkdir -p "$work/apps"
    cat >"$work/wharf-$algorithm.toml" <<TOML
[[listener]]
address = "127.0.0.1:0"

[[site]]
hosts = ["bench.test"]
default = true
apps = false
routes = [{ path = "/", upstream = "bench" }]

[[upstream]]
name = "bench"
algorithm = "$algorithm"
servers = [${servers%, }]
TOML
    start "wharf-$algorithm" "$bin/wharf" serve "$work/apps" --workers 1 \
        --config "$work/wharf-$algorithm.toml"
}

# start_haproxy BALANCE BACKEND...: HAProxy balancing over the backends; sets $addr, $pid.
start_haproxy() {
    local balance="$1" port i=0 b
    shift
    port="$(free_port)"
    {
        cat <<CFG
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # Keep-alive both ways (the default), and any idle backend connection may serve
    # any client's request, as wharf's per-backend pools do.
    option http-keep-alive
    http-reuse always

frontend bench
    bind 127.0.0.1:$port
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%Ts%rt
    http-request set-header X-Request-Id %[unique-id]
    default_backend pool

backend pool
    balance $balance
CFG
        for b in "$@"; do i=$((i + 1)); echo "    server b$i $b"; done
    } >"$work/haproxy-$balance.cfg"
    "$haproxy" -c -q -f "$work/haproxy-$balance.cfg"
    taskset -c 0 "$haproxy" -db -f "$work/haproxy-$balance.cfg" \
        >"$work/haproxy-$balance.out" 2>"$work/haproxy-$balance.err" &
    pid=$!
    pids+=("$pid")
    addr="127.0.0.1:$port"
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://$addr/" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "haproxy did not start" >&2; cat "$work/haproxy-$balance.err" >&2; exit 1
}

# client URL CONNECTIONS: bench-client (every request's own latency; wrk's percentiles
# are corrected for coordinated omission, which makes a few 50 ms answers a long tail)
# on CPU 1, after a 2 s warm-up; sets $client_rps and $client_p50, _p99, _p999 in µs.
client() {
    local out
    out="$(taskset -c 1 "$bin/bench-client" "$1" "$2" 2 &&
        taskset -c 1 "$bin/bench-client" "$1" "$2" "$duration")" ||
        { echo "errors in run of $1: $out" >&2; exit 1; }
    read -r _ _ _ _ _ client_rps _ client_p50 _ client_p99 _ client_p999 <<<"$(tail -1 <<<"$out")"
}
# user_sys PID: the user and the system CPU time process PID has used, in clock ticks.
user_sys() { awk '{print $14, $15}' "/proc/$1/stat"; }

start_backend fast-1
fast1="$addr"
start_backend fast-2
fast2="$addr"
start_backend slow "$slow_ms"
slow="$addr"

# --- 1. Round robin over two fast backends ---------------------------------------------
# A round measures the direct path and both proxies; rounds alternate which proxy goes
# first, so a drift of the shared machine lands on both. Each figure is the mean of the
# rounds; the requests/s of each round are shown too.
declare -A rps cpu p50 p99 busy sys
direct_p50="" direct_p99=""
order=(wharf haproxy)
for _ in $(seq 1 "$rounds"); do
    client "http://$fast1/" 1
    direct_p50+=" $client_p50" direct_p99+=" $client_p99"
    for proxy in "${order[@]}"; do
        case "$proxy" in
            wharf) start_wharf round_robin "$fast1" "$fast2" ;;
            haproxy) start_haproxy roundrobin "$fast1" "$fast2" ;;
        esac
        server_pid="$pid"
        client "http://$addr/" 1
        p50[$proxy]+=" $client_p50" p99[$proxy]+=" $client_p99"
        read -r user_before sys_before < <(user_sys "$pid")
        read -r proxy_rps _ < <(load "http://$addr/")
        rps[$proxy]+=" $proxy_rps"
        cpu[$proxy]+=" $(<"$work/cpu")"
        read -r user_after sys_after < <(user_sys "$pid")
        # The proxy's CPU use over both runs of load (warm-up included): near 100% means
        # it was the bottleneck, as it should be; and the kernel's share of it.
        used=$((user_after - user_before + sys_after - sys_before))
        busy[$proxy]+=" $(awk -v t="$used" -v hz="$(getconf CLK_TCK)" -v s="$((duration + 2))" \
            'BEGIN { printf "%.0f", t / hz / s * 100 }')"
        sys[$proxy]+=" $(( (sys_after - sys_before) * 100 / used ))"
        unset server_pid
        stop "$pid"
    done
    order=("${order[1]}" "${order[0]}")
done

# mean FORMAT VALUES: the mean of the space-separated VALUES.
mean() { awk -v f="$1" '{ t = 0; for (i = 1; i <= NF; i++) t += $i; printf f, t / NF }' <<<"$2"; }
declare -A round_rps
for proxy in wharf haproxy; do
    round_rps[$proxy]="${rps[$proxy]# }"
    for figure in rps p50 p99 busy sys; do
        declare -n values="$figure"
        values[$proxy]=$(mean "%.0f" "${values[$proxy]}")
    done
    unset -n values
    cpu[$proxy]=$(mean "%.1f" "${cpu[$proxy]}")
done
direct_p50=$(mean "%.0f" "$direct_p50") direct_p99=$(mean "%.0f" "$direct_p99")

added() { echo $(($1 - $2)); }
echo
echo "1. round robin over two hello backends; proxy on CPU 0 with one thread;" \
    "$rounds rounds of ${duration}s runs"
printf '%-10s %12s %8s %12s %10s %8s %16s %16s\n' proxy "req/s (c64)" ratio "CPU µs/req" \
    "CPU busy" "of it sys" "p50 µs (c1)" "p99 µs (c1)"
for proxy in wharf haproxy; do
    printf '%-10s %12s %8s %12s %9s%% %7s%% %8s (+%4s) %8s (+%4s)\n' "$proxy" "${rps[$proxy]}" \
        "$(ratio "${rps[$proxy]}" "${rps[haproxy]}")" "${cpu[$proxy]}" "${busy[$proxy]}" \
        "${sys[$proxy]}" "${p50[$proxy]}" "$(added "${p50[$proxy]}" "$direct_p50")" \
        "${p99[$proxy]}" "$(added "${p99[$proxy]}" "$direct_p99")"
done
printf '%-10s %12s %8s %12s %10s %8s %16s %16s\n' direct "" "" "" "" "" "$direct_p50" "$direct_p99"
echo "req/s of each round: wharf ${round_rps[wharf]}; haproxy ${round_rps[haproxy]}"
echo "targets: wharf ≥ 1.00× HAProxy's req/s ($(ratio "${rps[wharf]}" "${rps[haproxy]}")×)," \
    "≤ 20 µs added p50 ($(added "${p50[wharf]}" "$direct_p50") µs)"

# --- 2. One backend 50 ms late ---------------------------------------------------------
runs=("wharf least_latency" "wharf least_connections" "haproxy leastconn" "haproxy roundrobin")
declare -A late_rps late_p50 late_p99 late_p999 late_share
for run in "${runs[@]}"; do
    read -r proxy algorithm <<<"$run"
    "start_$proxy" "$algorithm" "$fast1" "$slow"
    before_fast=$(served "$fast1") before_slow=$(served "$slow")
    client "http://$addr/" 16
    late_rps[$run]=$client_rps late_p50[$run]=$client_p50 late_p99[$run]=$client_p99
    late_p999[$run]=$client_p999
    fast_n=$(( $(served "$fast1") - before_fast )) slow_n=$(( $(served "$slow") - before_slow ))
    late_share[$run]=$(awk -v s="$slow_n" -v f="$fast_n" 'BEGIN { printf "%.2f", s * 100 / (s + f) }')
    stop "$pid"
done

echo
echo "2. one of two backends answers ${slow_ms} ms late; 16 connections, ${duration}s runs"
printf '%-26s %10s %10s %10s %10s %12s\n' "proxy, algorithm" "req/s" "p50 µs" "p99 µs" \
    "p99.9 µs" "to slow (%)"
for run in "${runs[@]}"; do
    printf '%-26s %10.0f %10s %10s %10s %12s\n' "$run" "${late_rps[$run]}" "${late_p50[$run]}" \
        "${late_p99[$run]}" "${late_p999[$run]}" "${late_share[$run]}"
done
best=$(printf '%s\n' "${late_p99[haproxy leastconn]}" "${late_p99[haproxy roundrobin]}" | sort -n | head -1)
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "target: wharf least_latency p99 ≤ 0.5× HAProxy's best" \
    "($(ratio "${late_p99[wharf least_latency]}" "$best")×)"
