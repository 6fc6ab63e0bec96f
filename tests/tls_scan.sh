#!/usr/bin/env bash
# Scans wharf's HTTPS listener with testssl.sh (Debian package, installed if missing):
# protocols, cipher suites, key exchange, server defaults, HTTP headers over HTTPS and
# the known TLS vulnerabilities. wharf serves a certificate from `wharf cert dev` (ECDSA
# P-256, signed by a development CA that testssl.sh is told to trust) on 127.0.0.1, with
# SNI `scan.test`. Offline: no DNS lookups, no CRL/OCSP fetches.
#
# Prints every finding rated LOW or worse, then a one-line summary; exits non-zero if
# any finding is rated MEDIUM, HIGH or CRITICAL.
#
# Usage: tests/tls_scan.sh   (WHARF_BIN=path/to/wharf to scan a binary already built)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

command -v testssl >/dev/null || command -v testssl.sh >/dev/null || {
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
}
testssl="$(command -v testssl || command -v testssl.sh)"
command -v jq >/dev/null || {
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
}
if [ -z "${WHARF_BIN:-}" ]; then
    cargo build --quiet -p wharf --bin wharf
    WHARF_BIN="$repo/target/debug/wharf"
fi

work="$(mktemp -d)"
wharf_pid=""
cleanup() {
    [ -n "$wharf_pid" ] && kill "$wharf_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/public" "$work/apps"
echo "scanned" >"$work/public/index.html"
"$WHARF_BIN" cert dev --host scan.test --out "$work/certs" >/dev/null
cat >"$work/wharf.toml" <<TOML
[[listener]]
address = "127.0.0.1:0"
tls = true

[[site]]
hosts = ["scan.test"]
default = true
hsts_max_age = 31536000
root = "$work/public"
apps = false
tls = { cert = "$work/certs/scan.test.pem", key = "$work/certs/scan.test-key.pem" }
TOML
"$WHARF_BIN" serve "$work/apps" --listen 127.0.0.1:0 --cache-dir "$work/cache" \
    --data-dir "$work/data" --config "$work/wharf.toml" >"$work/wharf.out" 2>"$work/wharf.err" &
wharf_pid=$!
https=""
for _ in $(seq 1 300); do
    https="$(sed -n 's|^listening on https://||p' "$work/wharf.out" | head -1)"
    [ -n "$https" ] && break
    kill -0 "$wharf_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$https" ] || { echo "wharf did not start" >&2; cat "$work/wharf.err" >&2; exit 1; }
port="${https##*:}"

# --ip: connect to 127.0.0.1 but send the site's name as SNI and Host.
"$testssl" --quiet --color 0 --warnings off --nodns none --ip 127.0.0.1 \
    --add-ca "$work/certs/wharf-dev-ca.pem" --connect-timeout 5 --openssl-timeout 5 \
    --jsonfile "$work/scan.json" "scan.test:$port" >"$work/scan.txt" 2>&1 || true
[ -s "$work/scan.json" ] || { echo "testssl.sh wrote no findings" >&2; cat "$work/scan.txt" >&2; exit 1; }

echo "testssl.sh $("$testssl" --version 2>/dev/null | sed -n 's/.*testssl.sh *\([0-9][^ ]*\).*/\1/p' | head -1) against wharf (https://$https, SNI scan.test)"
jq -r '.[] | select(.severity | IN("LOW","MEDIUM","HIGH","CRITICAL")) | "  \(.severity)\t\(.id)\t\(.finding)"' \
    "$work/scan.json"
jq -r 'group_by(.severity) | map("\(.[0].severity) \(length)") | join(", ")' "$work/scan.json" |
    sed 's/^/findings by severity: /'
bad="$(jq '[.[] | select(.severity | IN("MEDIUM","HIGH","CRITICAL"))] | length' "$work/scan.json")"
if [ "$bad" -gt 0 ]; then
    echo "FAIL: $bad findings rated MEDIUM or worse" >&2
    exit 1
fi
echo "PASS: nothing rated MEDIUM or worse"
