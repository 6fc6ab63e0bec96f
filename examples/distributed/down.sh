#!/usr/bin/env bash
# Stops every process up.sh started, front to back: the balancer, the app nodes (they
# drain), DNS, then the databases (a clean shutdown); a process still running after a
# minute is killed. Then deletes the example's network namespaces (and with them the
# switch and every veth pair) and the client's /etc/netns entry. Fails unless all of it
# is gone at the end. Running it again, or when nothing is up, does nothing. The run
# directory (configs, data and logs) stays, for reading; the next up.sh starts afresh.
#
# Usage: examples/distributed/down.sh   (WHARF_EXAMPLE_RUN, WHARF_EXAMPLE_PREFIX: as for up.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-di-}"
# The nodes up.sh makes, each in a namespace of its own (beside the switch).
nodes=(lb app1 app2 db1 db2 dns client)
# Front to back: each waits for the ones before it to have stopped.
stop_nodes() {
    stop lb
    stop app1 app2
    stop dns
    stop db2 db1
}
# shellcheck source=../lib/netns-down.sh
source "$here/../lib/netns-down.sh"
