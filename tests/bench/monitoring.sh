#!/usr/bin/env bash
# Benchmark: what monitoring costs, in one run.
#   1. Hello world requests/s through three builds taking turns: an earlier commit's
#      wharf, without metrics (the baseline), and this checkout's with the access log
#      off and on (metrics are always on). The log goes to a file, as JSON lines.
#   2. The cost of one scrape of /metrics on a node with 50 apps and an upstream of 10
#      backends, each route and backend with traffic, against GET /healthz on the same
#      admin listener.
# Servers run one worker pinned to CPU 0, wrk on CPU 1.
#
# Usage: tests/bench/monitoring.sh [BASE_REV] [DURATION_SECONDS] [ROUNDS]
#        (defaults: the commit before the metrics, 8, 2)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
# The last commit before the node had metrics.
base_rev="$(git rev-parse --short "${1:-1552753}")"
duration="${2:-8}"
rounds="${3:-2}"
conns=64

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    git -C "$repo" worktree remove --force "$work/base" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
source "$repo/tests/bench/common.sh"

target="${CARGO_TARGET_DIR:-$repo/target}"
build_at "$base_rev" "$work/wharf-before"
cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin raw-hyper
cp "$target/release/wharf" "$work/wharf-after"
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
hello="$repo/guest-apps/target/wasm32-wasip2/release/hello.wasm"

mkdir -p "$work/apps"
cp "$hello" "$work/apps/hello.wasm"
printf '[log]\naccess = false\n' >"$work/off.toml"
printf '[log]\naccess = true\n' >"$work/on.toml"

# measure LABEL BINARY [CONFIG]: hello world requests/s, appended to $work/LABEL.txt.
measure() {
    local label="$1" binary="$2" config=()
    [ -n "${3:-}" ] && config=(--config "$3")
    start "$label" "$binary" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 \
        --cache-dir "$work/cache" --data-dir "$work/data" "${config[@]}"
    local server="$pid" rps
    read -r rps _ < <(load "http://$addr/hello")
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$rps" >>"$work/$label.txt"
}
for round in $(seq 1 "$rounds"); do
    measure before "$work/wharf-before"
    measure log-off "$work/wharf-after" "$work/off.toml"
    measure log-on "$work/wharf-after" "$work/on.toml"
done
lines=$(grep -c '"target":"access"' "$work/log-on.err" || true)

# The scrape: 50 apps, 10 backends (one server on 10 loopback addresses).
start backend "$target/release/raw-hyper" 0.0.0.0:0 1
backend_port="${addr##*:}"
mkdir -p "$work/apps50"
servers=""
for i in $(seq 1 50); do cp "$hello" "$work/apps50/hello$i.wasm"; done
for i in $(seq 2 11); do servers="$servers{ address = \"127.0.0.$i:$backend_port\" }, "; done
cat >"$work/scrape.toml" <<TOML
[[site]]
hosts = ["bench.test"]
default = true
routes = [{ path = "/api", upstream = "api" }]

[admin]
address = "127.0.0.1:0"

[log]
access = false

[[upstream]]
name = "api"
servers = [$servers]
TOML
start scrape "$work/wharf-after" serve "$work/apps50" --listen 127.0.0.1:0 --workers 1 \
    --cache-dir "$work/cache" --data-dir "$work/data50" --config "$work/scrape.toml"
admin="$(sed -n 's|^admin on http://\([^ ]*\).*|\1|p' "$work/scrape.out")"
for i in $(seq 1 50); do curl -sf -o /dev/null "http://$addr/hello$i"; done
for _ in $(seq 1 20); do curl -sf -o /dev/null "http://$addr/api/x"; done
size=$(curl -sf "http://$admin/metrics" | wc -c)
series=$(curl -sf "http://$admin/metrics" | grep -vc '^#')
conns=1
read -r health_rps _ < <(load "http://$admin/healthz")
read -r scrape_rps scrape_p99 < <(load "http://$admin/metrics")

mean() { awk '{ s += $1 } END { printf "%.0f", s / NR }' "$1"; }
before=$(mean "$work/before.txt") off=$(mean "$work/log-off.txt") on=$(mean "$work/log-on.txt")
echo
echo "hello world: before = $base_rev (no metrics), after = $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + changes');" \
    "$rounds rounds of ${duration}s, 64 connections, one worker on CPU 0"
printf '%-44s %12s %8s\n' "server" "requests/s" "ratio"
printf '%-44s %12s %8s\n' "before: no metrics (baseline)" "$before" "1.00"
printf '%-44s %12s %8s\n' "metrics on, access log off" "$off" "$(ratio "$off" "$before")"
printf '%-44s %12s %8s\n' "metrics on, access log on (JSON to a file)" "$on" "$(ratio "$on" "$before")"
echo "access log lines written in the last round: $lines"
echo
echo "one scrape, 50 apps and 10 backends: $size bytes, $series series;" \
    "$(awk -v r="$scrape_rps" 'BEGIN { printf "%.2f", 1000 / r }') ms each" \
    "($scrape_rps scrapes/s, p99 $scrape_p99 ms) against /healthz $health_rps/s:" \
    "$(ratio "$health_rps" "$scrape_rps")x the cost of a probe"
