#!/usr/bin/env bash
# Scans wharf's HTTPS listener with testssl.sh (Debian package, installed if missing):
# protocols, cipher suites, key exchange, server defaults, HTTP headers over HTTPS and
# the known TLS vulnerabilities. wharf serves, on 127.0.0.1 with SNI `scan.test`, an
# ECDSA P-256 certificate shaped like a public CA's: signed by a CA made here (which
# testssl.sh is told to trust), valid 90 days, with a CRL distribution point. (A
# `wharf cert dev` certificate names no CRL or OCSP responder, which testssl.sh rates
# HIGH: right for a development certificate, and not a property of the server.) The
# site sets HSTS and the usual security headers through `hsts_max_age` and `headers`,
# as a production site should. Offline: no DNS lookups, no CRL or OCSP fetches.
#
# Prints every finding rated LOW or worse (and testssl.sh's own warnings), then a one-line summary; exits non-zero if
# any finding is rated MEDIUM, HIGH or CRITICAL.
#
# Usage: tests/tls_scan.sh   (WHARF_BIN=path/to/wharf to scan a binary already built)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

tests/need.sh testssl:testssl.sh jq:jq
testssl="$(command -v testssl)"
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
certs="$work/certs"
mkdir -p "$certs"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=wharf scan CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$certs/ca-key.pem" -out "$certs/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=scan.test" \
    -keyout "$certs/scan.test-key.pem" -out "$certs/scan.test.csr" 2>/dev/null
cat >"$certs/leaf.ext" <<EXT
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:scan.test
crlDistributionPoints = URI:http://crl.scan.test/ca.crl
EXT
openssl x509 -req -in "$certs/scan.test.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca-key.pem" \
    -CAcreateserial -days 90 -sha256 -extfile "$certs/leaf.ext" \
    -out "$certs/scan.test.pem" 2>/dev/null
cat >"$work/wharf.toml" <<TOML
[[listener]]
address = "127.0.0.1:0"
tls = true

[[site]]
hosts = ["scan.test"]
default = true
hsts_max_age = 31536000
headers = { X-Content-Type-Options = "nosniff", X-Frame-Options = "DENY", Content-Security-Policy = "default-src 'self'", Referrer-Policy = "no-referrer" }
root = "$work/public"
apps = false
tls = { cert = "$certs/scan.test.pem", key = "$certs/scan.test-key.pem" }
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
    --add-ca "$certs/ca.pem" --connect-timeout 5 --openssl-timeout 5 \
    --jsonfile "$work/scan.json" "scan.test:$port" >"$work/scan.txt" 2>&1 || true
[ -s "$work/scan.json" ] || { echo "testssl.sh wrote no findings" >&2; cat "$work/scan.txt" >&2; exit 1; }

version="$("$testssl" --version 2>/dev/null | grep -o 'testssl *[0-9][0-9.]*' | grep -o '[0-9][0-9.]*' | head -1)"
echo "testssl.sh $version against wharf (https://$https, SNI scan.test)"
jq -r '.[] | select(.severity | IN("WARN","LOW","MEDIUM","HIGH","CRITICAL")) | "  \(.severity)\t\(.id)\t\(.finding)"' \
    "$work/scan.json"
jq -r 'group_by(.severity) | map("\(.[0].severity) \(length)") | join(", ")' "$work/scan.json" |
    sed 's/^/findings by severity: /'
bad="$(jq '[.[] | select(.severity | IN("MEDIUM","HIGH","CRITICAL"))] | length' "$work/scan.json")"
if [ "$bad" -gt 0 ]; then
    echo "FAIL: $bad findings rated MEDIUM or worse" >&2
    exit 1
fi
echo "PASS: nothing rated MEDIUM or worse"
