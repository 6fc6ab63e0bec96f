#!/usr/bin/env bash
# Starts the classic distributed web stack, secured and monitored, on this machine,
# each node in a network namespace of its own on one virtual switch (a Linux bridge):
# a wharf load balancer serving www.foobar.com over HTTPS only (plain HTTP redirected,
# HSTS), two wharf app nodes serving the same apps, a MariaDB primary with a replica
# (real replication), a DNS server for foobar.com, a Prometheus node scraping every
# wharf node with the alert rules of examples/monitoring, and a client namespace to
# try it from. Firewalls: only the balancer reaches the app nodes' site listeners,
# only the app nodes (and the replica, to replicate) the databases, only the
# monitoring node (and the balancer's health checks) the admin listeners. Every
# node's config, log and pid file go into one run directory; waits until each node is
# ready and Prometheus sees every target up, then prints how to reach it. Stop it all
# with down.sh. Needs root (namespaces, addresses).
#
# Usage: examples/secured-monitored/up.sh
# Environment:
#   WHARF_EXAMPLE_PREFIX    the namespaces' names start with this (default wharf-sm-)
#   WHARF_EXAMPLE_RUN       the run directory (default examples/secured-monitored/run)
#   WHARF                   a wharf binary to run (default: built here, debug profile)
#   WHARF_EXAMPLE_GUESTS    a directory of built guest apps (*.wasm) to serve (default:
#                           built here from guest-apps/)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/secured-monitored"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-sm-}"
# For down.sh, should this fail half-way.
export WHARF_EXAMPLE_RUN="$run" WHARF_EXAMPLE_PREFIX="$prefix"

# The namespaces' names are this prefix and a node's name: down.sh deletes by them.
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] ||
    { echo "WHARF_EXAMPLE_PREFIX must be letters, digits, - _ . (got '$prefix')" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "up.sh makes network namespaces: run it as root" >&2; exit 1; }

# The network: every namespace has its own stack, so these addresses never meet the
# host's (198.18.0.0/15 is set aside for benchmarking networks, RFC 2544).
net=198.18.2
declare -A addr=(
    [lb]="$net.10" [app1]="$net.21" [app2]="$net.22" [db1]="$net.31" [db2]="$net.32"
    [dns]="$net.53" [mon]="$net.90" [client]="$net.100"
)
nodes=(lb app1 app2 db1 db2 dns mon client)
switch="${prefix}switch"
http_port=80 https_port=443 app_port=8080 admin_port=9180 db_port=3306 dns_port=53
prometheus_port=9090
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

# --- What the nodes need: dnsmasq, MariaDB, Prometheus, the guest apps, wharf -----------
# dnsmasq-base: the program without the package that runs it as the system's resolver.
# prometheus: Debian's, with promtool; its system service is not started or used.
"$repo/tests/need.sh" ip:iproute2 dnsmasq:dnsmasq-base mariadbd:mariadb-server \
    prometheus:prometheus curl:curl dig:bind9-dnsutils
mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
dnsmasq="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
prometheus="$(command -v prometheus || echo /usr/bin/prometheus)"
promtool="$(command -v promtool || echo /usr/bin/promtool)"

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
# Secrets, generated per run and readable by root only: the app nodes' database
# password, the replication password, and the bearer token of every admin listener
# (Prometheus sends it).
secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
db_password="$(secret)" repl_password="$(secret)"
(umask 077 && printf '%s\n' "$db_password" >"$run/db-password" &&
    printf '%s\n' "$(secret)" >"$run/admin-token")

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
# socket is a file: reachable from every namespace, never from the network).
tuning=(--innodb-buffer-pool-size=16M --innodb-log-file-size=8M
    --innodb-temp-data-file-path=ibtmp1:1M:autoextend --innodb-flush-log-at-trx-commit=2
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci)
as_user=(--user=root)   # mariadbd refuses root without it
echo "creating the databases..." >&2
# The database's own firewall: each account may log in only from the address that
# needs it (with --skip-name-resolve, a host is matched as an address). The app nodes'
# account from app1 and app2, the replication account from the replica; every other
# address is refused before any password is asked for (error 1130), root included
# (unix socket only).
cat >"$run/db-setup.sql" <<SQL
FLUSH PRIVILEGES;
CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER 'wharf'@'${addr[app1]}' IDENTIFIED BY '$db_password';
GRANT ALL PRIVILEGES ON app.* TO 'wharf'@'${addr[app1]}';
GRANT SLAVE MONITOR, PROCESS ON *.* TO 'wharf'@'${addr[app1]}';
CREATE USER 'wharf'@'${addr[app2]}' IDENTIFIED BY '$db_password';
GRANT ALL PRIVILEGES ON app.* TO 'wharf'@'${addr[app2]}';
GRANT SLAVE MONITOR, PROCESS ON *.* TO 'wharf'@'${addr[app2]}';
CREATE USER 'repl'@'${addr[db2]}' IDENTIFIED BY '$repl_password';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'${addr[db2]}';
SQL
mkdir -p "$run/db-install-tmp"
mariadb-install-db --no-defaults --datadir="$run/db-template" --tmpdir="$run/db-install-tmp" \
    --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve "${as_user[@]}" \
    --extra-file="$run/db-setup.sql" "${tuning[@]}" >"$run/db-install.log" 2>&1 ||
    { echo "mariadb-install-db failed:" >&2; cat "$run/db-install.log" >&2; exit 1; }
rm -rf "$run/db-setup.sql" "$run/db-install-tmp"

# start_db NAME SERVER_ID [MARIADBD ARGS...]: mariadbd in the node's namespace, on its
# address only (bind-address: not on loopback, not on any other interface).
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
# The admin listeners let in the monitoring node only (and, on the app nodes, the
# balancer's health checks): this script asks from there too. /readyz needs no token.
ready() { on mon curl -sf -m 2 "http://${addr[$1]}:$admin_port/readyz"; }

echo "starting the app nodes..." >&2
for name in app1 app2; do
    ip="${addr[$name]}"
    mkdir -p "$run/$name"
    cat >"$run/$name/wharf.toml" <<TOML
# App node $name: serves the apps in ../apps; its apps' SQL goes to the cluster below
# (writes to the primary, reads to the replica while it keeps up).
[[listener]]
address = "$ip:$app_port"

# The app node's firewall: its site listener takes connections from the balancer
# only; any other is closed at once, without a byte. The balancer is also trusted to
# name the client (X-Forwarded-For, -Proto: the access log shows the real client).
[firewall]
allow = ["${addr[lb]}"]
trusted_proxies = ["${addr[lb]}"]

[apps]
dir = "../apps"

[database]
primary = "mysql://wharf@${addr[db1]}:$db_port/app"
replicas = ["mysql://wharf@${addr[db2]}:$db_port/app"]
password_file = "../db-password"

# The balancer checks /readyz here, Prometheus scrapes /metrics: only those two
# addresses get in (others get 403), and everything but the probes needs the token.
# On SIGTERM /readyz turns 503 and the node keeps serving this long, longer than the
# balancer's checks take to notice (interval × fall).
[admin]
address = "$ip:$admin_port"
allow = ["${addr[lb]}", "${addr[mon]}"]
token_file = "$run/admin-token"
drain_delay_ms = 1500
TOML
    start_wharf "$name"
done
wait_for app1 "ready" ready app1
wait_for app2 "ready" ready app2

# --- The balancer: HTTPS for www.foobar.com, in front of the app nodes ------------------
# A development CA (run/certs/wharf-dev-ca.pem: the client trusts it with --cacert)
# and a certificate it signs for both names the site answers to.
echo "starting the balancer..." >&2
"$WHARF" cert dev --host www.foobar.com --host foobar.com --out "$run/certs" >"$run/certs.log" 2>&1 ||
    { echo "wharf cert dev failed:" >&2; cat "$run/certs.log" >&2; exit 1; }
mkdir -p "$run/lb/apps"
cat >"$run/lb/wharf.toml" <<TOML
# The load balancer: the site's one public node. Plain HTTP only redirects to HTTPS;
# over HTTPS every request goes to one of the app nodes, round robin, skipping a node
# whose /readyz fails.
[[listener]]
address = "${addr[lb]}:$http_port"

[[listener]]
address = "${addr[lb]}:$https_port"
tls = true

[apps]
dir = "apps"

# Open to everyone (it is the site), but no one client may hold more than this many
# connections at once.
[firewall]
max_connections_per_ip = 100

# www.foobar.com over HTTPS only: http:// gets a 308 to https://, the apex (and a
# request by address) a 308 to www, and HTTPS answers carry Strict-Transport-Security,
# so a browser that has been here once never tries plain HTTP again (a year).
[[site]]
hosts = ["www.foobar.com", "foobar.com"]
canonical_host = "www.foobar.com"
default = true
https_redirect = true
hsts_max_age = 31536000
tls = { cert = "../certs/www.foobar.com.pem", key = "../certs/www.foobar.com-key.pem" }
headers = { X-Content-Type-Options = "nosniff" }
apps = false
routes = [{ path = "/", upstream = "app" }]

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

# Prometheus scrapes /metrics here: the monitoring node only, with the token.
[admin]
address = "${addr[lb]}:$admin_port"
allow = ["${addr[mon]}"]
token_file = "$run/admin-token"
TOML
start_wharf lb
wait_for lb "ready" ready lb

# --- DNS: foobar.com's names, both at the balancer --------------------------------------
# Authoritative for foobar.com only (--auth-zone); nothing forwarded (--no-resolv), no
# /etc/hosts. -k: in the foreground; log lines, with every query, on stderr (this file).
echo "starting DNS..." >&2
mkdir -p "$run/dns"
setsid ip netns exec "${prefix}dns" "$dnsmasq" -k --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address="${addr[dns]}" --bind-interfaces --port="$dns_port" \
    --pid-file="$run/dns/dnsmasq.pid" --log-facility=- --log-queries \
    --auth-zone=foobar.com --auth-server="ns.foobar.com,${addr[dns]}" \
    --host-record="ns.foobar.com,${addr[dns]}" \
    --host-record="www.foobar.com,${addr[lb]}" --host-record="foobar.com,${addr[lb]}" \
    </dev/null >"$run/dns.log" 2>&1 &
echo $! >"$run/dns.pid"
resolves() { [ "$(on client dig +short +time=1 +tries=1 "@${addr[dns]}" "$1" A)" = "${addr[lb]}" ]; }
wait_for dns "answering for www.foobar.com" resolves www.foobar.com
wait_for dns "answering for foobar.com" resolves foobar.com

ca="$run/certs/wharf-dev-ca.pem"
wait_for lb "answering at https://www.foobar.com/hello" \
    on client curl -sf -m 2 --cacert "$ca" "https://www.foobar.com/hello"

# --- Monitoring: Prometheus scraping every wharf node -----------------------------------
# The same jobs and rules as examples/monitoring (wharf-lb, wharf-app; alerts.yml),
# here with this network's addresses and the admin token. The databases have no
# /metrics: the app nodes report on them (wharf_db_*).
echo "starting monitoring..." >&2
mkdir -p "$run/mon/data"
cp "$repo/examples/monitoring/alerts.yml" "$run/mon/alerts.yml"
cat >"$run/mon/prometheus.yml" <<YAML
# Prometheus for the secured-monitored example: one job per role, each target a wharf
# node's admin listener (/metrics), which lets in this node's address only and wants
# the admin token. No Alertmanager: the alerts show at /alerts and go nowhere.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s

rule_files: [alerts.yml]

scrape_configs:
  # The load balancer: [[upstream]] "app" over both app nodes; the site's certificate.
  - job_name: wharf-lb
    metrics_path: /metrics
    authorization:
      credentials_file: $run/admin-token
    static_configs:
      - targets: ["${addr[lb]}:$admin_port"]

  # The app nodes: the same apps, the same database cluster.
  - job_name: wharf-app
    metrics_path: /metrics
    authorization:
      credentials_file: $run/admin-token
    static_configs:
      - targets: ["${addr[app1]}:$admin_port", "${addr[app2]}:$admin_port"]
YAML
"$promtool" check config "$run/mon/prometheus.yml" >"$run/mon/check.log" 2>&1 ||
    { echo "promtool rejects $run/mon/prometheus.yml:" >&2; cat "$run/mon/check.log" >&2; exit 1; }
# On its own address only; its data in the run directory. Log lines on stderr (this file).
setsid ip netns exec "${prefix}mon" "$prometheus" --config.file="$run/mon/prometheus.yml" \
    --web.listen-address="${addr[mon]}:$prometheus_port" --storage.tsdb.path="$run/mon/data" \
    </dev/null >"$run/mon.log" 2>&1 &
echo $! >"$run/mon.pid"
prometheus_url="http://${addr[mon]}:$prometheus_port"
wait_for mon "ready" on mon curl -sf -m 2 "$prometheus_url/-/ready"
# all_up: every one of the three targets has been scraped, and the last scrape worked.
all_up() {
    local targets
    targets="$(on mon curl -sf -m 2 "$prometheus_url/api/v1/targets?state=active")" || return 1
    [ "$(grep -o '"health":"up"' <<<"$targets" | wc -l)" -eq 3 ] &&
        ! grep -qE '"health":"(down|unknown)"' <<<"$targets"
}
wait_for mon "seeing every wharf node up" all_up

ok=1
cat <<EOF
up: the secured and monitored stack runs (configs, data and logs in $run)
  balancer       lb ${addr[lb]}: https :$https_port (www.foobar.com; HSTS), http :$http_port (308 to https), admin :$admin_port
  app nodes      app1 ${addr[app1]}, app2 ${addr[app2]}: site :$app_port (from lb only), admin :$admin_port
  db primary     mysql://wharf@${addr[db1]}:$db_port/app   (from app1, app2 only; password in $run/db-password)
  db replica     mysql://wharf@${addr[db2]}:$db_port/app
  DNS            ${addr[dns]}:$dns_port, foobar.com and www.foobar.com A ${addr[lb]}
  monitoring     Prometheus $prometheus_url (inside ${prefix}mon), admin listeners from ${addr[mon]} only
  secrets        CA $ca, admin token $run/admin-token
try, from the client namespace (its resolv.conf names the DNS node):
  ip netns exec ${prefix}client curl -s --cacert $ca https://www.foobar.com/hello
  ip netns exec ${prefix}client curl -sI http://www.foobar.com/hello
  ip netns exec ${prefix}client curl -s --cacert $ca https://www.foobar.com/todo -d '{"title": "first"}'
  ip netns exec ${prefix}client curl -s --cacert $ca https://www.foobar.com/todo
  ip netns exec ${prefix}client curl -sS -m 2 http://${addr[app1]}:$app_port/hello        # closed by app1's firewall
  ip netns exec ${prefix}client curl -s -m 2 http://${addr[lb]}:$admin_port/metrics       # 403
  ip netns exec ${prefix}client mariadb -h ${addr[db1]} -u wharf -p"\$(cat $run/db-password)"   # error 1130
and from the monitoring node:
  ip netns exec ${prefix}mon curl -s '$prometheus_url/api/v1/query?query=up'
  ip netns exec ${prefix}mon curl -s $prometheus_url/api/v1/alerts
  ip netns exec ${prefix}mon curl -s -H "Authorization: Bearer \$(cat $run/admin-token)" http://${addr[lb]}:$admin_port/upstreams
stop: $here/down.sh
EOF
