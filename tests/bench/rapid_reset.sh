#!/usr/bin/env bash
# Benchmark: legitimate traffic while one client floods rapid resets (HEADERS+RST_STREAM
# pairs on cleartext HTTP/2, reconnecting whenever wharf sends GOAWAY and closes), in
# one run: the legitimate success rate with the flood (target >= 99.9%), and the
# legitimate requests/s with the flood against the same load without it.
#
# wharf pinned to CPU 0 with one runtime worker serving the hello app; the legitimate
# client (bench-client, 64 HTTP/1.1 keep-alive connections, every non-200 or failed
# request an error) and the flood (rapid-reset, 2 connections) share CPU 1, so the
# with-flood rps also pays for the flood's own CPU.
#
# Usage: tests/bench/rapid_reset.sh [DURATION_SECONDS]   (default 10)
# WHARF=path/to/wharf uses that binary and the bench tools next to it instead of a
# release build (e.g. WHARF=target/debug/wharf after `cargo build --workspace
# --all-targets`, for a quick check of the script).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ -z "${WHARF:-}" ]; then
    cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin bench-client --bin rapid-reset
    WHARF="$repo/target/release/wharf"
fi
bin="$(cd "$(dirname "$WHARF")" && pwd)"
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
guests="$repo/guest-apps/target/wasm32-wasip2/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

source "$repo/tests/bench/common.sh"

mkdir -p "$work/apps"
cp "$guests/hello.wasm" "$work/apps/hello.wasm"
start wharf "$WHARF" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 --cache-dir "$work/cache"

# legit: "requests N errors N rps R ..." of one bench-client run (requests: the answered
# ones; errors: the others); errors do not end the
# script, they are what it measures.
legit() { taskset -c 1 "$bin/bench-client" "http://$addr/hello" "$conns" "$duration" || true; }
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }

taskset -c 1 "$bin/bench-client" "http://$addr/hello" "$conns" 2 >/dev/null || true   # warm-up
quiet="$(legit)"
taskset -c 1 "$bin/rapid-reset" "http://$addr/hello" 2 "$((duration + 2))" >"$work/flood.txt" &
flood_pid=$!
pids+=("$flood_pid")
flooded="$(legit)"
wait "$flood_pid"

quiet_rps="$(field rps <<<"$quiet")"
flood_rps="$(field rps <<<"$flooded")"
requests="$(field requests <<<"$flooded")"
errors="$(field errors <<<"$flooded")"
echo
echo "hello world, $conns legitimate connections, ${duration}s, wharf on 1 core with 1 worker"
echo "without flood: $quiet"
echo "with flood:    $flooded"
echo "flood:         $(cat "$work/flood.txt") (streams opened and reset, connections)"
echo "legitimate success rate with the flood: $(awk -v r="$requests" -v e="$errors" \
    'BEGIN { printf "%.3f%%", (r + e > 0 ? r * 100 / (r + e) : 0) }') (target >= 99.9%)"
echo "legitimate rps with / without the flood: $(ratio "$flood_rps" "$quiet_rps")"
