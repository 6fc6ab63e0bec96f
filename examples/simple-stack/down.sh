#!/usr/bin/env bash
# Stops every process up.sh started, front to back: the server (it drains: requests in
# flight finish), then DNS; a process still running after a minute is killed. Then
# deletes the example's network namespaces (and with them the switch and every veth
# pair) and the client's /etc/netns entry. Fails unless all of it is gone at the end.
# Running it again, or when nothing is up, does nothing. The run directory (config,
# static files, data and logs) stays, for reading; the next up.sh starts afresh.
#
# Usage: examples/simple-stack/down.sh   (WHARF_EXAMPLE_RUN, WHARF_EXAMPLE_PREFIX: as for up.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-ss-}"
# The nodes up.sh makes, each in a namespace of its own (beside the switch).
nodes=(web dns client)
# Front to back: each waits for the ones before it to have stopped.
stop_nodes() {
    stop web
    stop dns
}
# shellcheck source=../lib/netns-down.sh
source "$here/../lib/netns-down.sh"
