#!/usr/bin/env bash
# Benchmark: this checkout's wharf against an earlier commit's, in one run, so that a
# change to the serving path can be judged against noise measured at the same time.
#
# Builds both binaries in release (the earlier one from a temporary git worktree, in the
# same target directory so the dependencies are built once), then measures each on
#   1. hello world: guest-apps/hello, a fresh instance per request;
#   2. a 1 KiB static file over HTTP/1.1 (keep-alive), from a site's root.
# Servers run one worker pinned to CPU 0, wrk (64 connections) on CPU 1. The two
# binaries take turns, ROUNDS times (before, after, before, after, ...), so a drift of
# the machine during the run lands on both.
#
# Usage: tests/bench/before_after.sh [BASE_REV] [DURATION_SECONDS] [ROUNDS]
#        (defaults: HEAD~1, 8, 2)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
base_rev="$(git rev-parse --short "${1:-HEAD~1}")"
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
# Second, so target/release/wharf is left as this checkout's build.
cargo build --quiet --release -p wharf --bin wharf
cp "$target/release/wharf" "$work/wharf-after"
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)

mkdir -p "$work/apps" "$work/public"
cp "$repo/guest-apps/target/wasm32-wasip2/release/hello.wasm" "$work/apps/hello.wasm"
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$work/public/1k.txt"
cat >"$work/wharf.toml" <<TOML
[[site]]
hosts = ["bench.test"]
default = true
root = "$work/public"
TOML

# measure LABEL: starts $work/wharf-LABEL, loads both paths, appends to $work/LABEL.txt.
measure() {
    local label="$1"
    start "$label" "$work/wharf-$label" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 \
        --cache-dir "$work/cache" --data-dir "$work/data" --config "$work/wharf.toml"
    local server="$pid" hello static
    read -r hello _ < <(load "http://$addr/hello")
    read -r static _ < <(load "http://$addr/1k.txt")
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$hello $static" >>"$work/$label.txt"
}
for round in $(seq 1 "$rounds"); do
    measure before
    measure after
done

mean() { awk -v c="$2" '{ s += $c } END { printf "%.0f", s / NR }' "$1"; }
echo
echo "before = $base_rev, after = $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + changes');" \
    "$rounds rounds of ${duration}s, $conns connections, one worker on CPU 0"
printf '%-34s %14s %14s %8s\n' "benchmark" "before req/s" "after req/s" "ratio"
for i in 1 2; do
    name=$([ "$i" = 1 ] && echo "hello world, fresh instance" || echo "static 1 KiB, HTTP/1.1")
    printf '%-34s %14s %14s %8s\n' "$name" "$(mean "$work/before.txt" "$i")" \
        "$(mean "$work/after.txt" "$i")" "$(ratio "$(mean "$work/after.txt" "$i")" "$(mean "$work/before.txt" "$i")")"
done
echo "each round (before: hello static / after: hello static):"
paste -d' ' "$work/before.txt" "$work/after.txt" | sed 's/^/  /'
