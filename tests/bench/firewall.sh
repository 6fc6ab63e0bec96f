#!/usr/bin/env bash
# Benchmark: hello world with the firewall on (100 allow/deny rules across [firewall],
# the listener and the site, and a rate limit per client that is never reached)
# against the same node with no [firewall], in one run. Target: ≥ 0.95×.
#
# Server pinned to CPU 0 with one runtime worker, wrk pinned to CPU 1, 64 connections.
# Usage: tests/bench/firewall.sh [DURATION_SECONDS]   (default 10)
#        WHARF=path/to/wharf to use a binary already built.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ -z "${WHARF:-}" ]; then
    # Both packages at once, as the other scripts build them: the same features, one binary.
    cargo build --quiet --release -p wharf -p wharf-tests --bin wharf
    WHARF="$repo/target/release/wharf"
fi
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
guests="$repo/guest-apps/target/wasm32-wasip2/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

source "$repo/tests/bench/common.sh"

mkdir -p "$work/apps"
cp "$guests/hello.wasm" "$work/apps/hello.wasm"

# n networks of the 198.18.0.0/15 benchmarking range, none of them the client's.
nets() { local from=$1 n=$2; for i in $(seq "$from" $((from + n - 1))); do
    printf '"198.%d.%d.0/24", ' $((18 + i / 256 % 2)) $((i % 256)); done; }
{
    echo "[firewall]"
    echo "deny = [$(nets 0 40)]"
    echo "rate_limit = { per_second = 1000000, burst = 1000000 }"
    echo "[[listener]]"
    echo "address = \"127.0.0.1:0\""
    # The client's network is the last of the allow list: every rule is looked at.
    echo "allow = [$(nets 40 28)\"127.0.0.0/8\"]"
    echo "[[site]]"
    echo "hosts = [\"localhost\"]"
    echo "default = true"
    echo "deny = [$(nets 68 31)]"
} >"$work/on.toml"
printf '[[listener]]\naddress = "127.0.0.1:0"\n' >"$work/off.toml"
rules=$(grep -o '/[0-9]*"' "$work/on.toml" | wc -l)

start off "$WHARF" serve "$work/apps" --config "$work/off.toml" --workers 1 --cache-dir "$work/cache"
off_addr="$addr" off_pid="$pid"
start on "$WHARF" serve "$work/apps" --config "$work/on.toml" --workers 1 --cache-dir "$work/cache"
on_addr="$addr" on_pid="$pid"

server_pid="$off_pid"
read -r off_rps off_p99 < <(load "http://$off_addr/hello")
server_pid="$on_pid"
read -r on_rps on_p99 < <(load "http://$on_addr/hello")
unset server_pid

echo
echo "hello world, $conns connections, ${duration}s, server on 1 core with 1 worker"
table_header
table_row "wharf, no [firewall] (baseline)" "$off_rps" "$off_p99" "$off_rps"
table_row "wharf, $rules rules and a rate limit" "$on_rps" "$on_p99" "$off_rps"
