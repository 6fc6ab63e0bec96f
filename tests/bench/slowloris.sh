#!/usr/bin/env bash
# Benchmark: legitimate requests while a slowloris attack holds connections open, in
# one run. wrk (64 connections, CPU 1) asks wharf (one worker, CPU 0) for the hello app,
# first alone (the baseline), then while the `slowloris` client (CPU 1) holds 1,000
# connections, each trickling a request head that never ends, one byte every 2 s (the
# server closes them at its header read timeout; the client opens them again). Prints
# both p99s and their ratio (target: at most 2).
#
# Usage: tests/bench/slowloris.sh [DURATION_SECONDS]   (default 10)
#   WHARF=path/to/wharf: that binary instead of a release build (both clients are then
#   built without --release, for a quick check with a debug build).
#   SLOW_CONNECTIONS=N: instead of 1,000.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64
slow="${SLOW_CONNECTIONS:-1000}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ -n "${WHARF:-}" ]; then
    wharf="$(realpath "$WHARF")"
    cargo build --quiet -p wharf-tests --bin slowloris
    slowloris="$repo/target/debug/slowloris"
else
    cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin slowloris
    wharf="$repo/target/release/wharf"
    slowloris="$repo/target/release/slowloris"
fi
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2 -p hello)
# Each side holds a descriptor per connection.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((slow + conns + 256)) ] || { echo "open files limit $(ulimit -n) is too low for $slow connections" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$repo/tests/bench/common.sh"

mkdir -p "$work/apps"
cp guest-apps/target/wasm32-wasip2/release/hello.wasm "$work/apps/hello.wasm"
start wharf "$wharf" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 --cache-dir "$work/cache"
wharf_addr="$addr"

read -r base_rps base_p99 < <(load "http://$wharf_addr/hello")

# Held past the end of the loaded run (warm-up included), then stopped.
taskset -c 1 "$slowloris" "$wharf_addr" "$slow" 2000 $((duration + 60)) >"$work/slow.out" 2>"$work/slow.err" &
slow_pid=$!
pids+=("$slow_pid")
for _ in $(seq 1 600); do
    grep -q '^holding' "$work/slow.out" && break
    kill -0 "$slow_pid" 2>/dev/null || { echo "slowloris failed:" >&2; cat "$work/slow.err" >&2; exit 1; }
    sleep 0.1
done
grep -q '^holding' "$work/slow.out" || { echo "slowloris did not open $slow connections" >&2; exit 1; }
open=$(ss -Htn state established "( sport = :${wharf_addr##*:} )" | wc -l)

read -r slow_rps slow_p99 < <(load "http://$wharf_addr/hello")
open_after=$(ss -Htn state established "( sport = :${wharf_addr##*:} )" | wc -l)
kill "$slow_pid" 2>/dev/null || true

echo
echo "hello world, $conns connections, ${duration}s, wharf on 1 core with 1 worker"
printf '%-44s %12s %10s %8s\n' "run" "requests/s" "p99 ms" "p99 ratio"
printf '%-44s %12.0f %10.2f %8s\n' "no slowloris (baseline)" "$base_rps" "$base_p99" "1.00"
printf '%-44s %12.0f %10.2f %8s\n' "$slow slowloris connections held" "$slow_rps" "$slow_p99" "$(ratio "$slow_p99" "$base_p99")"
echo "established connections to wharf: $open before the loaded run, $open_after after it"
echo "p99 with slowloris / without (target <= 2): $(ratio "$slow_p99" "$base_p99")"
