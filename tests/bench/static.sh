#!/usr/bin/env bash
# Benchmark: wharf's web server role against nginx (Debian package, installed if
# missing), in one run, with the same worker count and pinning:
#   1. a 1 KiB static file over HTTP/1.1 (keep-alive);
#   2. TLS handshakes per second: HTTPS with a new connection for every request
#      (`Connection: close`), same certificate (ECDSA P-256 from `wharf cert dev`).
# Each server runs one worker pinned to CPU 0; wrk (64 connections) runs on CPU 1.
#
# Usage: tests/bench/static.sh [DURATION_SECONDS]   (default 10)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
duration="${1:-10}"
conns=64

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
cargo build --quiet --release -p wharf -p wharf-tests --bin wharf
bin="$repo/target/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
source "$repo/tests/bench/common.sh"

mkdir -p "$work/public" "$work/apps" "$work/certs" "$work/nginx"
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$work/public/1k.txt"
"$bin/wharf" cert dev --host bench.test --out "$work/certs" >/dev/null
cert="$work/certs/bench.test.pem"
key="$work/certs/bench.test-key.pem"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_http="$(free_port)"
nginx_https="$(free_port)"
cat >"$work/nginx/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    include /etc/nginx/mime.types;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$nginx_http;
        listen 127.0.0.1:$nginx_https ssl http2;
        server_name bench.test;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $work/public;
    }
}
CONF
taskset -c 0 "$nginx_bin" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx.err" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$nginx_http/1k.txt" >/dev/null 2>&1 && break
    sleep 0.1
done

cat >"$work/wharf.toml" <<TOML
[[listener]]
address = "127.0.0.1:0"
tls = true

[[site]]
hosts = ["bench.test"]
default = true
root = "$work/public"
apps = false
tls = { cert = "$cert", key = "$key" }
TOML
start wharf "$bin/wharf" serve "$work/apps" --listen 127.0.0.1:0 --workers 1 \
    --cache-dir "$work/cache" --data-dir "$work/data" --config "$work/wharf.toml"
wharf_http="$(sed -n 's|^listening on http://||p' "$work/wharf.out" | head -1)"
wharf_https="$(sed -n 's|^listening on https://||p' "$work/wharf.out" | head -1)"

read -r nginx_rps nginx_p99 < <(load "http://127.0.0.1:$nginx_http/1k.txt")
read -r wharf_rps wharf_p99 < <(load "http://$wharf_http/1k.txt")
read -r nginx_tls nginx_tls_p99 < <(load "https://127.0.0.1:$nginx_https/1k.txt" -H "Connection: close")
read -r wharf_tls wharf_tls_p99 < <(load "https://$wharf_https/1k.txt" -H "Connection: close")

echo
echo "static 1 KiB file and TLS handshakes, $conns connections, ${duration}s, one worker on CPU 0"
table_header
table_row "nginx, 1 KiB over HTTP/1.1 (baseline)" "$nginx_rps" "$nginx_p99" "$nginx_rps"
table_row "wharf, 1 KiB over HTTP/1.1" "$wharf_rps" "$wharf_p99" "$nginx_rps"
table_row "nginx, HTTPS new connection each (baseline)" "$nginx_tls" "$nginx_tls_p99" "$nginx_tls"
table_row "wharf, HTTPS new connection each" "$wharf_tls" "$wharf_tls_p99" "$nginx_tls"
