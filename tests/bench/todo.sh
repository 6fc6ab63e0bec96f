#!/usr/bin/env bash
# Benchmark: the todo app's GET /todo/:id on MySQL (a MariaDB primary and one replica,
# started by the test harness), through wharf, against a native hyper + mysql_async
# server running the same query over the same pool size, in one run.
#
# Servers pinned to CPU 0 with one runtime worker; wrk (64 connections, random ids
# among 1000 rows) and MariaDB on CPU 1. Reports requests/s, p99 and the ratio to the
# native server, for a fresh instance per request (the default) and with
# reuse_instances.
#
# Usage: tests/bench/todo.sh [DURATION_SECONDS]   (default 10)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64
pool=16
rows=1000

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release -p wharf -p wharf-tests --bin wharf --bin todo-native --bin db-cluster
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
bin="$repo/target/release"
guests="$repo/guest-apps/target/wasm32-wasip2/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Closing its stdin stops db-cluster, which takes MariaDB down with it.
    [ -n "${CLUSTER_PID:-}" ] && { exec {CLUSTER[1]}>&- 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

coproc CLUSTER { taskset -c 1 "$bin/db-cluster" 1 "$rows" 2>"$work/cluster.err"; }
primary="" replica=""
while read -r kind url <&"${CLUSTER[0]}"; do
    case "$kind" in
        primary) primary="$url" ;;
        replica) replica="$url" ;;
        ready) break ;;
    esac
done
[ -n "$replica" ] || { echo "MariaDB did not start" >&2; cat "$work/cluster.err" >&2; exit 1; }
export DB_PASSWORD="wharf-test-pw"

source "$repo/tests/bench/common.sh"

# wrk asks for a random one of the seeded todos on every request.
cat >"$work/random-id.lua" <<LUA
request = function()
    return wrk.format("GET", wrk.path .. math.random($rows))
end
LUA

# The same app twice, in two wharf processes: a fresh instance per request, and reuse.
for mode in fresh reuse; do
    mkdir -p "$work/$mode"
    cp "$guests/todo.wasm" "$work/$mode/todo.wasm"
    printf 'database = true\n' >"$work/$mode/todo.toml"
done
printf 'reuse_instances = true\n' >>"$work/reuse/todo.toml"
cat >"$work/wharf.toml" <<TOML
[database]
primary = "$primary"
replicas = ["$replica"]
password_env = "DB_PASSWORD"
pool_max = $pool
TOML

start native "$bin/todo-native" 127.0.0.1:0 1 "$replica" "$pool"
native_addr="$addr"
for mode in fresh reuse; do
    start "wharf-$mode" "$bin/wharf" serve "$work/$mode" --listen 127.0.0.1:0 --workers 1 \
        --cache-dir "$work/cache" --data-dir "$work/data" --config "$work/wharf.toml"
    declare "${mode}_addr=$addr"
done

read -r native_rps native_p99 < <(load "http://$native_addr/todo/" -s "$work/random-id.lua")
read -r fresh_rps fresh_p99 < <(load "http://$fresh_addr/todo/" -s "$work/random-id.lua")
read -r reuse_rps reuse_p99 < <(load "http://$reuse_addr/todo/" -s "$work/random-id.lua")

echo
echo "GET /todo/:id on MariaDB (1 replica, pool $pool), $conns connections, ${duration}s, server on 1 core with 1 worker"
table_header
table_row "native hyper + mysql_async (baseline)" "$native_rps" "$native_p99" "$native_rps"
table_row "wharf todo, fresh instance per request" "$fresh_rps" "$fresh_p99" "$native_rps"
table_row "wharf todo, reuse_instances = true" "$reuse_rps" "$reuse_p99" "$native_rps"
