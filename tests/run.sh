#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, then
# builds wharf and the guest components from source and runs every test.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# MariaDB for the database tests: tests/src/mariadb.rs starts its own servers from the
# mariadbd binary, each in a temporary directory, and never uses the system service.
tests/need.sh mariadbd:mariadb-server
# Prometheus and promtool for the monitoring tests; ss (iproute2) finds the port a
# Prometheus started on port 0 got.
tests/need.sh promtool:prometheus prometheus:prometheus ss:iproute2
# Headless Chromium renders the status page.
tests/need.sh chromium:chromium
# Pebble, a real ACME server, and its DNS server for the automatic HTTPS tests.
tests/need.sh pebble:pebble pebble-challtestsrv:pebble
# systemd-analyze checks the systemd unit in examples/systemd.
tests/need.sh systemd-analyze:systemd
# The examples' up.sh installs these itself; here first, so the tests' time limits
# for up.sh do not include apt.
tests/need.sh ip:iproute2 keepalived:keepalived dnsmasq:dnsmasq-base curl:curl dig:bind9-dnsutils

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Guests first, so a toolchain problem shows as a build error, not a test failure.
(cd guest-apps && cargo build --release --target wasm32-wasip2)
(cd tests/guests && cargo build --release --target wasm32-wasip2)

cargo test --workspace "$@"
