#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, then
# builds wharf and the guest components from source and runs every test.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# MariaDB for the database tests: tests/src/mariadb.rs starts its own servers from the
# mariadbd binary, each in a temporary directory, and never uses the system service.
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    (
        # Unless the system already has a policy, deny service starts while installing,
        # so the package's attempt to start its service (needless here, and failing in
        # containers without an init system) cannot fail the install.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
            $sudo chmod +x "$policy"
            trap '$sudo rm -f "$policy"' EXIT
        fi
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server
    )
fi

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Guests first, so a toolchain problem shows as a build error, not a test failure.
(cd guest-apps && cargo build --release --target wasm32-wasip2)
(cd tests/guests && cargo build --release --target wasm32-wasip2)

cargo test --workspace "$@"
