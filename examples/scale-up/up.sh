#!/usr/bin/env bash
# Starts the scaled-up classic web stack on this machine, each node in a network
# namespace of its own on one virtual switch (a Linux bridge): two wharf load
# balancers sharing the site's address (a VRRP virtual IP kept by keepalived), two
# wharf app nodes serving the same apps, a MariaDB primary with a replica (real
# replication), a DNS server for foobar.com and a client namespace to try it from.
# Every node's config, log and pid file go into one run directory; waits until each
# node is ready and one balancer holds the virtual IP, then prints how to reach it.
# Stop it all with down.sh. Needs root (namespaces, addresses).
#
# Usage: examples/scale-up/up.sh
# Environment:
#   WHARF_EXAMPLE_PREFIX    the namespaces' names start with this (default wharf-su-)
#   WHARF_EXAMPLE_RUN       the run directory (default examples/scale-up/run)
#   WHARF                   a wharf binary to run (default: built here, debug profile)
#   WHARF_EXAMPLE_GUESTS    a directory of built guest apps (*.wasm) to serve (default:
#                           built here from guest-apps/)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-su-}"
net=198.18.0
declare -A addr=(
    [lb1]="$net.11" [lb2]="$net.12" [app1]="$net.21" [app2]="$net.22"
    [db1]="$net.31" [db2]="$net.32" [dns]="$net.53" [client]="$net.100"
)
nodes=(lb1 lb2 app1 app2 db1 db2 dns client)
# shellcheck source=../lib/netns-up.sh
source "$here/../lib/netns-up.sh"
http_port=80
# The site's address, which the balancers share; VRRP: the router id both use, the
# master's advertisement interval.
vip="$net.10" vrid=10 advert_int=0.1

need keepalived:keepalived mariadbd:mariadb-server
keepalived="$(command -v keepalived || echo /usr/sbin/keepalived)"
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

# The balancers check /readyz here (from their own addresses: hence the allow-list).
# On SIGTERM it turns 503 and the node keeps serving this long, longer than the
# balancers' checks take to notice (interval × fall).
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

# --- The balancer pair: wharf in front, keepalived holding the address ------------------
# keepalived's view of its wharf: the track file (which wharf writes: 0 while it is
# ready to hold the address, anything else not; `weight 0` makes non-zero a FAULT), and
# /healthz (a wharf that died cannot write the file: wharf-alive.sh notices).
echo "starting the balancer pair..." >&2
for name in lb1:150 lb2:100; do
    priority="${name#*:}" name="${name%%:*}"
    ip="${addr[$name]}"
    mkdir -p "$run/$name/apps"
    track_line="track_file = \"$run/$name/ready\""
    cat >"$run/$name/wharf.toml" <<TOML
# Load balancer $name: one of a pair. Both run all the time; the one holding the
# site's address ($vip, moved by keepalived) gets the clients. Every request goes to
# one of the app nodes, round robin, skipping a node whose /readyz fails.
[[listener]]
address = "0.0.0.0:$http_port"

[apps]
dir = "apps"

# www.foobar.com, and requests by address: to the app nodes.
[[site]]
hosts = ["www.foobar.com"]
default = true
apps = false
routes = [{ path = "/", upstream = "app" }]

# The apex: a redirect to www (the rest of the path kept).
[[site]]
hosts = ["foobar.com"]
apps = false
routes = [{ path = "/", redirect = "http://www.foobar.com", status = 308 }]

$(app_upstream_toml)

# keepalived reads the track file: wharf writes 0 there while it can hold the
# address, and 1 from the moment it drains.
[admin]
address = "$ip:$admin_port"
allow = ["$net.0/24", "127.0.0.0/8"]
$track_line
TOML
    cat >"$run/$name/keepalived.conf" <<CONF
# keepalived for $name: VRRP version 3 with its peer on the switch, for the site's
# address $vip. Both start as BACKUP with nopreempt: whichever becomes master keeps
# the address until it fails, so a node coming back does not take it over again.
global_defs {
    router_id $prefix$name
    vrrp_version 3
    # The checks run as root; refuse scripts anyone else could change.
    script_user root
    enable_script_security
    # Real-time scheduling once keepalived finds itself run 20 ms late: a busy machine
    # must not delay adverts 0.1 s apart (the default threshold is a whole second).
    max_auto_priority
    min_auto_priority_delay 20000
}

# 0 while wharf is ready to hold the address, anything else not (weight 0: non-zero
# is FAULT). Created as 1 if missing: not ready until wharf says so.
track_file wharf_ready {
    file "$run/$name/ready"
    weight 0
    init_file 1
}

# wharf alive: a killed wharf cannot write 1 into the file. The script watches
# /healthz 0.1 s apart for most of each second and fails at two failed looks in a row:
# one failure is a FAULT, noticed within about 0.2 s.
vrrp_script wharf_alive {
    script "/bin/bash $here/wharf-alive.sh http://$ip:$admin_port/healthz"
    interval 1
    timeout 2
    fall 1
    rise 2
    init_fail
}

vrrp_instance site {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id $vrid
    priority $priority
    advert_int $advert_int
    virtual_ipaddress {
        $vip/24 dev eth0
    }
    track_file {
        wharf_ready weight 0
    }
    track_script {
        wharf_alive
    }
}
CONF
    "$keepalived" --config-test -f "$run/$name/keepalived.conf" >"$run/$name/keepalived-check.log" 2>&1 ||
        { echo "keepalived rejects $run/$name/keepalived.conf:" >&2; cat "$run/$name/keepalived-check.log" >&2; exit 1; }
    # -n: stays in the foreground (its pid is the one recorded); -P: VRRP only; -l -D -G:
    # detailed log lines on stderr (this file), none to syslog; its own pid files.
    setsid ip netns exec "$prefix$name" "$keepalived" -n -P -l -D -G \
        -f "$run/$name/keepalived.conf" -p "$run/$name/keepalived.pid" \
        -r "$run/$name/keepalived_vrrp.pid" </dev/null >>"$run/$name-keepalived.log" 2>&1 &
    echo $! >"$run/$name-keepalived.pid"
done
for name in lb1 lb2; do
    wait_for "$name-keepalived" "running its VRRP process" test -s "$run/$name/keepalived_vrrp.pid"
    start_wharf "$name"
done
for name in lb1 lb2; do
    wait_for "$name" "ready" ready "$name"
done

# --- DNS: foobar.com's names, all at the site's address ---------------------------------
start_dns "$vip"

# --- One balancer holds the address; the site answers through it -----------------------
# holder: the balancer the address is on (fails unless exactly one has it).
holder() {
    local name holders=()
    for name in lb1 lb2; do
        [[ "$(ip -n "$prefix$name" -o addr show dev eth0)" == *" $vip/"* ]] && holders+=("$name")
    done
    [ "${#holders[@]}" -eq 1 ] && echo "${holders[0]}"
}
wait_for lb1-keepalived "seeing one balancer hold $vip" holder
wait_for lb1 "answering through the app nodes at $vip" on client curl -sf -m 2 "http://$vip/hello"
wait_for lb1 "answering at http://www.foobar.com/" on client curl -sf -m 2 "http://www.foobar.com/hello"
master="$(holder)"

up_done
cat <<EOF
up: the scaled-up stack runs (configs, data and logs in $run)
  site address   $vip (VRRP, router id $vrid), held by $master: $prefix$master
  balancers      lb1 ${addr[lb1]} (priority 150), lb2 ${addr[lb2]} (priority 100): site :$http_port, admin :$admin_port
  app nodes      app1 ${addr[app1]}, app2 ${addr[app2]}: site :$app_port, admin :$admin_port
  db primary     mysql://wharf@${addr[db1]}:$db_port/app   (password in $run/db-password)
  db replica     mysql://wharf@${addr[db2]}:$db_port/app
  DNS            ${addr[dns]}:$dns_port, foobar.com and www.foobar.com A $vip
try, from the client namespace (its resolv.conf names the DNS node):
  ip netns exec ${prefix}client dig +short @${addr[dns]} www.foobar.com
  ip netns exec ${prefix}client curl -s http://www.foobar.com/hello
  ip netns exec ${prefix}client curl -s --resolve www.foobar.com:$http_port:$vip http://www.foobar.com/todo -d '{"title": "first"}'
  ip netns exec ${prefix}client curl -s http://${addr[lb1]}:$admin_port/upstreams
  ip -n ${prefix}lb1 -br addr show dev eth0; ip -n ${prefix}lb2 -br addr show dev eth0
fail over: kill "\$(cat $run/$master-keepalived.pid)"   (or $master.pid, wharf)
stop: $here/down.sh
EOF
