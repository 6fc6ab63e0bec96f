#!/usr/bin/env bash
# Starts the classic distributed web stack on this machine, each node in a network
# namespace of its own on one virtual switch (a Linux bridge): a wharf load balancer
# for www.foobar.com, two wharf app nodes serving the same apps from one database, a
# MariaDB primary with a replica (real replication), a DNS server for foobar.com and a
# client namespace to try it from. Every node's config, data, log and pid file go into
# one run directory; waits until each node is ready and the site answers by name, then
# prints how to reach it. Stop it all with down.sh. Needs root (namespaces, addresses).
#
# Usage: examples/distributed/up.sh
# Environment:
#   WHARF_EXAMPLE_PREFIX    the namespaces' names start with this (default wharf-di-)
#   WHARF_EXAMPLE_RUN       the run directory (default examples/distributed/run)
#   WHARF                   a wharf binary to run (default: built here, debug profile)
#   WHARF_EXAMPLE_GUESTS    a directory of built guest apps (*.wasm) to serve (default:
#                           built here from guest-apps/)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-di-}"
net=198.18.3
declare -A addr=(
    [lb]="$net.10" [app1]="$net.21" [app2]="$net.22" [db1]="$net.31" [db2]="$net.32"
    [dns]="$net.53" [client]="$net.100"
)
nodes=(lb app1 app2 db1 db2 dns client)
# shellcheck source=../lib/netns-up.sh
source "$here/../lib/netns-up.sh"
http_port=80

need mariadbd:mariadb-server
build
fresh_run apps
make_network

# --- MariaDB: a primary and its replica -------------------------------------------------
start_databases % %

# --- Two app nodes: the same apps, the same database ------------------------------------
echo "starting the app nodes..." >&2
for name in app1 app2; do
    ip="${addr[$name]}"
    mkdir -p "$run/$name"
    {
        app_node_toml "$name"
        cat <<TOML

# The balancer checks /readyz here (from its own address: hence the allow-list). On
# SIGTERM it turns 503 and the node keeps serving this long, longer than the
# balancer's checks take to notice (interval × fall).
[admin]
address = "$ip:$admin_port"
allow = ["$net.0/24", "127.0.0.0/8"]
drain_delay_ms = 1500
TOML
    } >"$run/$name/wharf.toml"
    start_wharf "$name"
done
wait_for app1 "ready" ready app1
wait_for app2 "ready" ready app2

# --- The balancer, in front of the app nodes --------------------------------------------
echo "starting the balancer..." >&2
mkdir -p "$run/lb/apps"
cat >"$run/lb/wharf.toml" <<TOML
# The load balancer: the site's one public node. Every request goes to one of the app
# nodes, round robin, skipping a node whose /readyz fails.
[[listener]]
address = "${addr[lb]}:$http_port"

[apps]
dir = "apps"

# www.foobar.com; the apex (and a request by address) gets a 308 to www.
[[site]]
hosts = ["www.foobar.com", "foobar.com"]
canonical_host = "www.foobar.com"
default = true
apps = false
routes = [{ path = "/", upstream = "app" }]

$(app_upstream_toml)

[admin]
address = "${addr[lb]}:$admin_port"
allow = ["$net.0/24", "127.0.0.0/8"]
TOML
start_wharf lb
wait_for lb "ready" ready lb

# --- DNS: foobar.com's names, both at the balancer --------------------------------------
start_dns "${addr[lb]}"
wait_for lb "answering at http://www.foobar.com/hello" \
    on client curl -sf -m 2 "http://www.foobar.com/hello"

up_done
cat <<EOF
up: the distributed stack runs (configs, data and logs in $run)
  balancer       lb ${addr[lb]}: site :$http_port (www.foobar.com; foobar.com redirects to it), admin :$admin_port
  app nodes      app1 ${addr[app1]}, app2 ${addr[app2]}: site :$app_port, admin :$admin_port
  db primary     mysql://wharf@${addr[db1]}:$db_port/app   (password in $run/db-password)
  db replica     mysql://wharf@${addr[db2]}:$db_port/app
  DNS            ${addr[dns]}:$dns_port, foobar.com and www.foobar.com A ${addr[lb]}
try, from the client namespace (its resolv.conf names the DNS node):
  ip netns exec ${prefix}client curl -s http://www.foobar.com/hello
  ip netns exec ${prefix}client curl -s http://www.foobar.com/todo -d '{"title": "first"}'
  ip netns exec ${prefix}client curl -s http://www.foobar.com/todo
  ip netns exec ${prefix}client curl -s http://${addr[lb]}:$admin_port/upstreams
a node dies: kill -9 "\$(cat $run/app1.pid)"   (or lb, db1, db2)
stop: $here/down.sh
EOF
