#!/usr/bin/env bash
# Benchmark: hello world through wharf vs a minimal raw hyper server, in one run.
#
# Server pinned to CPU 0 with one runtime worker, wrk pinned to CPU 1, 64 connections.
# Reports requests/s and p99 for each, and wharf's ratio to raw hyper, for a fresh
# instance per request and for opt-in instance reuse. Then restart time with 10 apps,
# with and without the compile cache, and the in-process cost of App::invoke.
#
# Usage: tests/bench/hello.sh [DURATION_SECONDS]   (default 10)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin raw-hyper
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
(cd tests/guests && cargo build --quiet --release --target wasm32-wasip2)
bin="$repo/target/release"
guests="$repo/guest-apps/target/wasm32-wasip2/release"
test_guests="$repo/tests/guests/target/wasm32-wasip2/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

source "$repo/tests/bench/common.sh"

mkdir -p "$work/apps"
cp "$guests/hello.wasm" "$work/apps/hello.wasm"
cp "$guests/hello.wasm" "$work/apps/reuse.wasm"
printf 'reuse_instances = true\n' >"$work/apps/reuse.toml"

start raw "$bin/raw-hyper" 127.0.0.1:0 1
raw_addr="$addr" raw_pid="$pid"
start wharf "$bin/wharf" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 --cache-dir "$work/cache"
wharf_addr="$addr" wharf_pid="$pid"

server_pid="$raw_pid"
read -r raw_rps raw_p99 < <(load "http://$raw_addr/hello")
raw_wakes=$(<"$work/wakes") raw_cpu=$(<"$work/cpu")
server_pid="$wharf_pid"
read -r fresh_rps fresh_p99 < <(load "http://$wharf_addr/hello")
fresh_wakes=$(<"$work/wakes") fresh_cpu=$(<"$work/cpu")
read -r reuse_rps reuse_p99 < <(load "http://$wharf_addr/reuse")
reuse_wakes=$(<"$work/wakes") reuse_cpu=$(<"$work/cpu")
unset server_pid

echo
echo "hello world, $conns connections, ${duration}s, server on 1 core with 1 worker"
table_header
table_row "raw hyper (baseline)" "$raw_rps" "$raw_p99" "$raw_rps"
table_row "wharf, fresh instance per request" "$fresh_rps" "$fresh_p99" "$raw_rps"
table_row "wharf, reuse_instances = true" "$reuse_rps" "$reuse_p99" "$raw_rps"
echo "server CPU per response (µs): raw hyper $raw_cpu, fresh $fresh_cpu, reuse $reuse_cpu"
echo "client wake-ups per response (wrk's CPU idle when the answer came): raw hyper" \
    "$raw_wakes, fresh $fresh_wakes, reuse $reuse_wakes"

# Restart time with 10 apps: spawn to listening line (every app loaded by then).
mkdir -p "$work/ten"
i=0
for wasm in "$guests"/*.wasm "$test_guests"/*.wasm; do
    for copy in 1 2 3; do
        [ "$i" -ge 10 ] && break
        cp "$wasm" "$work/ten/app$i.wasm"; i=$((i + 1))
    done
done
startup_ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$bin/wharf" serve "$work/ten" --listen 127.0.0.1:0 "$@" >"$work/ten.out" 2>"$work/ten.err" &
    local pid=$!
    until grep -q '^listening on' "$work/ten.out" 2>/dev/null; do sleep 0.005; done
    t1=$(date +%s%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo $(( (t1 - t0) / 1000000 ))
}
startup_ms --cache-dir "$work/ten-cache" >/dev/null   # fills the cache
uncached=(); cached=()
for _ in 1 2 3; do
    uncached+=("$(startup_ms --no-cache)")
    cached+=("$(startup_ms --cache-dir "$work/ten-cache")")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo
echo "start with 10 apps (median of 3)"
printf '%-34s %8s ms\n' "no cache (compile all)" "$(median "${uncached[@]}")"
printf '%-34s %8s ms\n' "compile cache warm" "$(median "${cached[@]}")"
echo "ratio cached/uncached: $(ratio "$(median "${cached[@]}")" "$(median "${uncached[@]}")")"

# Where the time goes: one request through App::invoke in-process, no sockets or HTTP.
echo
echo "in-process App::invoke (no network, one request at a time)"
taskset -c 0 cargo bench --quiet -p wharf --bench invoke 2>/dev/null
