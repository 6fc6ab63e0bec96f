#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz for a while each, starting from the seeds
# in tests/fuzz/corpus/TARGET (kept as they are: new inputs go to a scratch directory).
# A crash stops the run and leaves its input in tests/fuzz/artifacts/TARGET/; keep it
# as a unit test next to the code it broke once fixed.
#
# Usage: tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60, every target)
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
seconds="${1:-60}"
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

fuzz=(cargo +nightly fuzz)
# No sanitizer: the targets are safe Rust, where a bug shows as a panic (which
# libFuzzer reports as a crash anyway), and a build without ASan is twice as fast to
# run and much faster to build.
flags=(--fuzz-dir tests/fuzz --sanitizer none)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir tests/fuzz)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${fuzz[@]}" build "${flags[@]}"
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    echo "== $target (${seconds}s)"
    # -max_len: wharf.toml files are small; long inputs only slow the search down.
    status=0
    "${fuzz[@]}" run "${flags[@]}" "$target" "$work/$target" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        >"$work/$target.log" 2>&1 || status=$?
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$work/$target.log" || true
    if [ "$status" -ne 0 ]; then
        grep -v '^#' "$work/$target.log" | tail -40 >&2
        echo "FAIL: $target found a crash (input in tests/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
done
echo "PASS: ${#targets[@]} targets, ${seconds}s each, no crash"
