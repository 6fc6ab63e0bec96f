#!/usr/bin/env bash
# Installs the Debian packages a script needs, each only if its command is missing.
# Usage: tests/need.sh COMMAND:PACKAGE...   e.g. tests/need.sh mariadbd:mariadb-server
#
# Service starts are denied while installing (unless the system has a policy of its
# own): wharf's tests and examples start their own servers, and a package's attempt to
# start its system service fails in containers without an init system.
set -euo pipefail
missing=()
for need in "$@"; do
    command="${need%%:*}"
    command -v "$command" >/dev/null 2>&1 || [ -x "/usr/sbin/$command" ] || missing+=("${need#*:}")
done
[ ${#missing[@]} -gt 0 ] || exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
