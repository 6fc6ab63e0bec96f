#!/usr/bin/env bash
# Checks the Prometheus configuration and alerting rules here with Prometheus's own
# promtool, and runs the rules' unit tests (alerts_test.yml). Installs promtool from
# Debian's prometheus package if it is missing.
#
# Usage: examples/monitoring/check.sh
set -euo pipefail
cd "$(dirname "$0")"
# need.sh also accepts a command in /usr/sbin, which may not be on PATH.
PATH="$PATH:/usr/sbin:/sbin"
../../tests/need.sh promtool:prometheus
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
echo "PASS: prometheus.yml, alerts.yml and alerts_test.yml ($(promtool --version 2>&1 | head -n 1))"
