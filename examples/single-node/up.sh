#!/usr/bin/env bash
# Builds the guest apps and serves them with wharf on http://127.0.0.1:8080, with each
# app's manifest; apps granted a database get a SQLite file in examples/single-node/data.
# Usage: examples/single-node/up.sh [extra `wharf serve` flags, e.g. --listen 127.0.0.1:9000]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/single-node"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

echo "building guest apps..." >&2
(cd "$repo/guest-apps" && cargo build --release --target wasm32-wasip2)
mkdir -p "$here/apps"
for wasm in "$repo"/guest-apps/target/wasm32-wasip2/release/*.wasm; do
    cp "$wasm" "$here/apps/"
done
for manifest in "$repo"/guest-apps/*/*.toml; do
    [ "$(basename "$manifest")" = Cargo.toml ] || cp "$manifest" "$here/apps/"
done

echo "building and starting wharf..." >&2
cd "$repo"
exec cargo run --quiet -p wharf -- serve "$here/apps" --data-dir "$here/data" "$@"
