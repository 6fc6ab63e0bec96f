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
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/scale-up"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-su-}"
# For down.sh, should this fail half-way.
export WHARF_EXAMPLE_RUN="$run" WHARF_EXAMPLE_PREFIX="$prefix"

# The namespaces' names are this prefix and a node's name: down.sh deletes by them.
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] ||
    { echo "WHARF_EXAMPLE_PREFIX must be letters, digits, - _ . (got '$prefix')" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "up.sh makes network namespaces: run it as root" >&2; exit 1; }

# The network: every namespace has its own stack, so these addresses never meet the
# host's (198.18.0.0/15 is set aside for benchmarking networks, RFC 2544).
net=198.18.0
vip="$net.10"
declare -A addr=(
    [lb1]="$net.11" [lb2]="$net.12" [app1]="$net.21" [app2]="$net.22"
    [db1]="$net.31" [db2]="$net.32" [dns]="$net.53" [client]="$net.100"
)
nodes=(lb1 lb2 app1 app2 db1 db2 dns client)
switch="${prefix}switch"
http_port=80 app_port=8080 admin_port=9180 db_port=3306 dns_port=53
# VRRP: the router id both balancers share; the master's advertisement interval.
vrid=10 advert_int=0.1
# Each check of readiness is tried this often, 0.1 s apart: a minute.
polls=600

for pid_file in "$run"/*.pid; do
    [ -e "$pid_file" ] || continue
    pid="$(<"$pid_file")"
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || continue
    if [[ "$cmdline" == *"$run/"* ]]; then
        echo "$(basename "$pid_file" .pid) is already running (pid $pid): run $here/down.sh first" >&2
        exit 1
    fi
done
namespaces=" $(ip netns list | awk '{print $1}' | tr '\n' ' ') "
for ns in "$switch" "${nodes[@]/#/$prefix}"; do
    if [[ "$namespaces" == *" $ns "* ]]; then
        echo "network namespace $ns exists: run $here/down.sh first" >&2
        exit 1
    fi
done

# --- What the nodes need: keepalived, dnsmasq, MariaDB, the guest apps, wharf -----------
# dnsmasq-base: the program without the package that runs it as the system's resolver.
"$repo/tests/need.sh" ip:iproute2 keepalived:keepalived dnsmasq:dnsmasq-base \
    mariadbd:mariadb-server curl:curl dig:bind9-dnsutils
mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
keepalived="$(command -v keepalived || echo /usr/sbin/keepalived)"
dnsmasq="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"

guests="${WHARF_EXAMPLE_GUESTS:-}"
if [ -z "$guests" ]; then
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    echo "building guest apps..." >&2
    # The guests are their own workspace, with their own target directory.
    (cd "$repo/guest-apps" && env -u CARGO_TARGET_DIR cargo build --quiet --release --target wasm32-wasip2)
    guests="$repo/guest-apps/target/wasm32-wasip2/release"
fi
if [ -z "${WHARF:-}" ]; then
    echo "building wharf..." >&2
    (cd "$repo" && cargo build --quiet -p wharf)
    WHARF="${CARGO_TARGET_DIR:-$repo/target}/debug/wharf"
fi

# --- The run directory, fresh: empty databases, the apps both app nodes serve -----------
# Only a directory an earlier up.sh made (or an empty one) is wiped.
if [ -n "$(ls -A "$run" 2>/dev/null)" ] && [ ! -e "$run/.wharf-example-run" ]; then
    echo "$run is not empty and not a run directory of this example: not touching it" >&2
    exit 1
fi
rm -rf "$run"
mkdir -p "$run/apps"
touch "$run/.wharf-example-run"
found=0
for wasm in "$guests"/*.wasm; do
    [ -e "$wasm" ] || continue
    cp "$wasm" "$run/apps/"
    found=1
done
[ "$found" = 1 ] || { echo "no guest apps (*.wasm) in $guests" >&2; exit 1; }
for manifest in "$repo"/guest-apps/*/*.toml; do
    [ "$(basename "$manifest")" = Cargo.toml ] || cp "$manifest" "$run/apps/"
done
secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
db_password="$(secret)" repl_password="$(secret)"
(umask 077 && printf '%s\n' "$db_password" >"$run/db-password")

ok=0
on_exit() {
    [ "$ok" = 1 ] && return
    echo "up did not finish; stopping what it started (logs stay in $run)" >&2
    "$here/down.sh" >&2 || true
}
trap on_exit EXIT

# on NODE CMD...: runs CMD in the node's namespace.
on() { local node="$1"; shift; ip netns exec "$prefix$node" "$@"; }

# wait_for NAME WHAT CMD...: polls CMD until it succeeds while process NAME runs; on
# failure quotes the end of its log.
wait_for() {
    local name="$1" what="$2" pid
    shift 2
    pid="$(<"$run/$name.pid")"
    for _ in $(seq 1 "$polls"); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { fail "$name" "exited before $what"; return 1; }
        sleep 0.1
    done
    fail "$name" "not $what after $((polls / 10)) s"
}
# fail NAME PROBLEM
fail() { echo "$1: $2; end of $run/$1.log:" >&2; tail -n 30 "$run/$1.log" >&2; return 1; }

# --- The network: a switch, and each node plugged into it by a veth pair ----------------
# down.sh removes /run/netns again, once empty, if `ip netns add` makes it now (and
# mounts it): the mark is outside the run directory, for every copy of the example.
[ -e /run/netns ] || touch /run/.wharf-example-netns
echo "creating the network ($switch and ${#nodes[@]} nodes)..." >&2
ip netns add "$switch"
ip -n "$switch" link set dev lo up
ip -n "$switch" link add name br0 type bridge
ip -n "$switch" link set dev br0 up
for node in "${nodes[@]}"; do
    ns="$prefix$node"
    ip netns add "$ns"
    ip -n "$ns" link set dev lo up
    # The switch's end is named after the node; the node's end is its eth0.
    ip -n "$switch" link add name "$node" type veth peer name eth0 netns "$ns"
    ip -n "$switch" link set dev "$node" master br0 up
    ip -n "$ns" addr add "${addr[$node]}/24" dev eth0
    ip -n "$ns" link set dev eth0 up
done
# The client resolves names with the DNS node: `ip netns exec` binds the files in
# /etc/netns/NAME/ over /etc for the command it runs.
[ -e /etc/netns ] || { mkdir /etc/netns && touch /etc/netns/.wharf-example; }
mkdir -p "/etc/netns/${prefix}client"
printf 'nameserver %s\n' "${addr[dns]}" >"/etc/netns/${prefix}client/resolv.conf"

# --- MariaDB: one set of system tables and users, copied to both nodes -----------------
# The same settings as the test harness (tests/src/mariadb.rs): small InnoDB, GTIDs,
# nothing from /etc/mysql (--no-defaults), admin over the unix socket as root (a unix
# socket is a file: reachable from every namespace).
tuning=(--innodb-buffer-pool-size=16M --innodb-log-file-size=8M
    --innodb-temp-data-file-path=ibtmp1:1M:autoextend --innodb-flush-log-at-trx-commit=2
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci)
as_user=(--user=root)   # mariadbd refuses root without it
echo "creating the databases..." >&2
cat >"$run/db-setup.sql" <<SQL
FLUSH PRIVILEGES;
CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER 'wharf'@'%' IDENTIFIED BY '$db_password';
GRANT ALL PRIVILEGES ON app.* TO 'wharf'@'%';
GRANT SLAVE MONITOR, PROCESS ON *.* TO 'wharf'@'%';
CREATE USER 'repl'@'%' IDENTIFIED BY '$repl_password';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
SQL
mkdir -p "$run/db-install-tmp"
mariadb-install-db --no-defaults --datadir="$run/db-template" --tmpdir="$run/db-install-tmp" \
    --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve "${as_user[@]}" \
    --extra-file="$run/db-setup.sql" "${tuning[@]}" >"$run/db-install.log" 2>&1 ||
    { echo "mariadb-install-db failed:" >&2; cat "$run/db-install.log" >&2; exit 1; }
rm -rf "$run/db-setup.sql" "$run/db-install-tmp"

# start_db NAME SERVER_ID [MARIADBD ARGS...]: mariadbd in the node's namespace, on its
# address.
start_db() {
    local name="$1" id="$2"
    shift 2
    mkdir -p "$run/$name"
    cp -a "$run/db-template" "$run/$name/data"
    # setsid: the node outlives this script and the terminal it ran in.
    setsid ip netns exec "$prefix$name" "$mariadbd" --no-defaults --datadir="$run/$name/data" \
        --tmpdir="$run/$name" --socket="$run/$name/mysqld.sock" --pid-file="$run/$name/mysqld.pid" \
        --log-error="$run/$name.log" --bind-address="${addr[$name]}" --port="$db_port" \
        "${as_user[@]}" --skip-name-resolve --server-id="$id" --log-bin=mariadb-bin \
        --log-slave-updates --binlog-format=ROW "${tuning[@]}" "$@" \
        </dev/null >>"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}
sql() { mariadb --no-defaults --socket="$run/$1/mysqld.sock" -uroot -e "$2"; }
replicating() {
    local status
    status="$(sql db2 'SHOW SLAVE STATUS\G')"
    grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

start_db db1 1
start_db db2 2 --read-only=1 --relay-log=relay-bin
wait_for db1 "accepting connections" sql db1 'SELECT 1'
wait_for db2 "accepting connections" sql db2 'SELECT 1'
rm -rf "$run/db-template"
sql db2 "CHANGE MASTER TO MASTER_HOST='${addr[db1]}', MASTER_PORT=$db_port, \
    MASTER_USER='repl', MASTER_PASSWORD='$repl_password', MASTER_USE_GTID=slave_pos, \
    MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
wait_for db2 "replicating from the primary" replicating

# --- Two app nodes: the same apps, the same database ------------------------------------
start_wharf() {
    local name="$1"
    if ! "$WHARF" check --config "$run/$name/wharf.toml" >"$run/$name/check.log" 2>&1; then
        echo "$name: wharf check fails:" >&2
        cat "$run/$name/check.log" >&2
        return 1
    fi
    # JSON lines (stderr is a file), an access line per request among them.
    setsid ip netns exec "$prefix$name" "$WHARF" serve --config "$run/$name/wharf.toml" \
        </dev/null >"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}
ready() { on "$1" curl -sf -m 2 "http://${addr[$1]}:$admin_port/readyz"; }

echo "starting the app nodes..." >&2
for name in app1 app2; do
    ip="${addr[$name]}"
    mkdir -p "$run/$name"
    cat >"$run/$name/wharf.toml" <<TOML
# App node $name: serves the apps in ../apps; its apps' SQL goes to the cluster below
# (writes to the primary, reads to the replica while it keeps up).
[[listener]]
address = "$ip:$app_port"

[apps]
dir = "../apps"

[database]
primary = "mysql://wharf@${addr[db1]}:$db_port/app"
replicas = ["mysql://wharf@${addr[db2]}:$db_port/app"]
password_file = "../db-password"

# The balancers check /readyz here (from their own addresses: hence the allow-list).
# On SIGTERM it turns 503 and the node keeps serving this long, longer than the
# balancers' checks take to notice (interval × fall).
[admin]
address = "$ip:$admin_port"
allow = ["$net.0/24", "127.0.0.0/8"]
drain_delay_ms = 1500
TOML
    start_wharf "$name"
done
wait_for app1 "ready" ready app1
wait_for app2 "ready" ready app2

# --- The balancer pair: wharf in front, keepalived holding the address ------------------
# keepalived's view of its wharf: the track file (which wharf writes: 0 while it is
# ready to hold the address, anything else not; `weight 0` makes non-zero a FAULT), and
# /healthz (a wharf that died cannot write the file; the check fails at once).
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

[[upstream]]
name = "app"
algorithm = "round_robin"
servers = [{ address = "${addr[app1]}:$app_port" }, { address = "${addr[app2]}:$app_port" }]

# Each app node's admin listener: down after 2 failed checks, up after 2 good ones.
[upstream.health_check]
path = "/readyz"
port = $admin_port
interval_ms = 500
rise = 2
fall = 2

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

# wharf alive: a killed wharf cannot write 1 into the file.
vrrp_script wharf_alive {
    script "/usr/bin/curl -sf -o /dev/null -m 1 http://$ip:$admin_port/healthz"
    interval 1
    timeout 2
    fall 2
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
# Authoritative for foobar.com only (--auth-zone); nothing forwarded (--no-resolv), no
# /etc/hosts. -k: in the foreground; log lines, with every query, on stderr (this file).
echo "starting DNS..." >&2
mkdir -p "$run/dns"
setsid ip netns exec "${prefix}dns" "$dnsmasq" -k --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address="${addr[dns]}" --bind-interfaces --port="$dns_port" \
    --pid-file="$run/dns/dnsmasq.pid" --log-facility=- --log-queries \
    --auth-zone=foobar.com --auth-server="ns.foobar.com,${addr[dns]}" \
    --host-record="ns.foobar.com,${addr[dns]}" \
    --host-record="www.foobar.com,$vip" --host-record="foobar.com,$vip" \
    </dev/null >"$run/dns.log" 2>&1 &
echo $! >"$run/dns.pid"
resolves() { [ "$(on client dig +short +time=1 +tries=1 "@${addr[dns]}" "$1" A)" = "$vip" ]; }
wait_for dns "answering for www.foobar.com" resolves www.foobar.com
wait_for dns "answering for foobar.com" resolves foobar.com

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

ok=1
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
