#!/usr/bin/env bash
# Benchmark: tiered compilation, in one run.
#
# 1. Time from a component renamed into the apps directory to its first 200, with an
#    empty compile cache, tiered (the default: Winch first) against `tiered = false`
#    (Cranelift only, the baseline), for a large component from another toolchain (a
#    JavaScript app built here with componentize-js, about 13 MB) and for guest-apps'
#    todo; and, tiered, the time from the rename until the optimised build serves.
#    Each the median of $reps runs, each run a fresh wharf with a fresh cache.
#    wharf has both cores here: compilation is parallel.
# 2. hello requests/s on each tier's code: `tiered = "baseline"` (Winch's code) against
#    `tiered = false` (Cranelift's), server pinned to CPU 0 with one worker, wrk on CPU 1.
#
# Usage: tests/bench/tiered.sh [DURATION_SECONDS] [REPS]   (defaults 10, 3)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
reps="${2:-3}"
conns=64

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release -p wharf --bin wharf
(cd guest-apps && cargo build --quiet --release --target wasm32-wasip2)
bin="$repo/target/release"
guests="$repo/guest-apps/target/wasm32-wasip2/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$repo/tests/bench/common.sh"

# The JavaScript component: componentize-js (pinned) from the npm registry, against
# the wasi:http WIT that wharf's wasmtime-wasi-http ships, at the version the
# JavaScript engine binds (0.2.10; wharf links any 0.2.x). Built once into target/.
js_dir="$repo/target/bench-js"
js="$js_dir/js.wasm"
if [ ! -f "$js" ]; then
    mkdir -p "$js_dir"
    wit_src="$(cargo metadata --quiet --format-version 1 --manifest-path host/Cargo.toml |
        python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "wasmtime-wasi-http"))' |
        xargs dirname)/wit/deps"
    rm -rf "$js_dir/wit" && mkdir -p "$js_dir/wit"
    cp -r "$wit_src" "$js_dir/wit/deps"
    # Versions past 0.2.10, in package names and @since gates alike.
    sed -i -E 's/0\.2\.(1[1-9]|[2-9][0-9])\b/0.2.10/g' "$js_dir"/wit/deps/*.wit
    printf 'package wharf:bench;\n\nworld js {\n  include wasi:http/proxy@0.2.10;\n}\n' >"$js_dir/wit/world.wit"
    cat >"$js_dir/app.js" <<'EOF'
addEventListener("fetch", (event) =>
  event.respondWith(new Response("Hello from JavaScript!\n", { headers: { "content-type": "text/plain" } })),
);
EOF
    cat >"$js_dir/build.mjs" <<'EOF'
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize({ sourcePath: source, witPath: wit, worldName: "js" });
await writeFile(out, component);
EOF
    [ -f "$js_dir/package.json" ] || (cd "$js_dir" && npm init -y >/dev/null)
    (cd "$js_dir" && npm install --silent --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0)
    (cd "$js_dir" && node build.mjs app.js wit js.wasm.part && mv js.wasm.part js.wasm)
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# until_200 URL: polls URL until it answers 200, for at most 120 s.
until_200() {
    for _ in $(seq 1 24000); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
        sleep 0.005
    done
    echo "$1 never answered 200" >&2; exit 1
}

# until_optimised FILE: waits until wharf's log FILE says an app was optimised.
until_optimised() {
    for _ in $(seq 1 24000); do
        grep -q "app optimised" "$1" && return 0
        sleep 0.005
    done
    echo "no optimised build in $1" >&2; exit 1
}

# deploy TIERED WASM NAME PATH [MANIFEST]: a fresh wharf (tiered = TIERED, empty cache,
# an apps directory holding only NAME.toml with MANIFEST), then WASM renamed in as
# NAME.wasm; sets $serving and $optimised, the
# milliseconds from the rename to the first 200 and to the optimised build serving
# ("-" without tiers).
deploy() {
    local tiered="$1" wasm="$2" name="$3" path="$4" manifest="${5:-}" run="$work/run-$RANDOM"
    mkdir -p "$run/apps" "$run/cache" "$run/data"
    printf '[apps]\ntiered = %s\n' "$tiered" >"$run/wharf.toml"
    [ -z "$manifest" ] || printf '%s\n' "$manifest" >"$run/apps/$name.toml"
    cpus=0,1 start "$name" "$bin/wharf" serve "$run/apps" --listen 127.0.0.1:0 --workers 1 \
        --cache-dir "$run/cache" --data-dir "$run/data" --config "$run/wharf.toml"
    cp "$wasm" "$run/apps/.$name.part"
    local t0 t1 t2="-"
    t0=$(now_ms)
    mv "$run/apps/.$name.part" "$run/apps/$name.wasm"
    until_200 "http://$addr$path"
    t1=$(now_ms)
    if [ "$tiered" = true ]; then
        until_optimised "$work/$name.err"
        t2=$(( $(now_ms) - t0 ))
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    serving=$(( t1 - t0 )) optimised=$t2
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "rename into the apps directory -> first 200, empty cache, median of $reps runs"
printf '%-32s %10s %14s %18s %8s\n' "component" "size MB" "mode" "first 200 ms" "ratio"
for app in "js|$js|/js|" "todo|$guests/todo.wasm|/todo|database = true"; do
    IFS='|' read -r name wasm path manifest <<<"$app"
    size=$(awk -v b="$(stat -c %s "$wasm")" 'BEGIN { printf "%.1f", b / 1048576 }')
    : >"$work/cranelift" && : >"$work/tiered" && : >"$work/takeover"
    for _ in $(seq 1 "$reps"); do
        deploy false "$wasm" "$name" "$path" "$manifest"
        echo "$serving" >>"$work/cranelift"
        deploy true "$wasm" "$name" "$path" "$manifest"
        echo "$serving" >>"$work/tiered"
        echo "$optimised" >>"$work/takeover"
    done
    cranelift=$(median <"$work/cranelift") tiered=$(median <"$work/tiered")
    takeover=$(median <"$work/takeover")
    printf '%-32s %10s %14s %18s %8s\n' "$name" "$size" "Cranelift only" "$cranelift" "1.00"
    printf '%-32s %10s %14s %18s %8s\n' "$name" "$size" "tiered" "$tiered" "$(ratio "$tiered" "$cranelift")"
    printf '%-32s %10s %14s %18s %8s\n' "$name" "$size" "-> optimised" "$takeover" "$(ratio "$takeover" "$cranelift")"
done

# Each tier's code under load.
mkdir -p "$work/hello-apps"
cp "$guests/hello.wasm" "$work/hello-apps/hello.wasm"
for tiered in false '"baseline"'; do
    label=$([ "$tiered" = false ] && echo optimised || echo baseline)
    printf '[apps]\ntiered = %s\n' "$tiered" >"$work/$label.toml"
    start "hello-$label" "$bin/wharf" serve "$work/hello-apps" --listen 127.0.0.1:0 --workers 1 \
        --cache-dir "$work/hello-cache" --config "$work/$label.toml"
    read -r rps p99 < <(load "http://$addr/hello")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    eval "${label}_rps=$rps ${label}_p99=$p99"
done
echo
echo "hello world on each tier's code, $conns connections, ${duration}s, server on 1 core with 1 worker"
table_header
table_row "Cranelift's code (tiered = false, baseline)" "$optimised_rps" "$optimised_p99" "$optimised_rps"
table_row "Winch's code (tiered = \"baseline\")" "$baseline_rps" "$baseline_p99" "$optimised_rps"
