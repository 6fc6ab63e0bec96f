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
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-sm-}"
net=198.18.2
declare -A addr=(
    [lb]="$net.10" [app1]="$net.21" [app2]="$net.22" [db1]="$net.31" [db2]="$net.32"
    [dns]="$net.53" [mon]="$net.90" [client]="$net.100"
)
nodes=(lb app1 app2 db1 db2 dns mon client)
# shellcheck source=../lib/netns-up.sh
source "$here/../lib/netns-up.sh"
http_port=80 https_port=443 prometheus_port=9090

# prometheus: Debian's, with promtool; its system service is not started or used.
need mariadbd:mariadb-server prometheus:prometheus
prometheus="$(command -v prometheus || echo /usr/bin/prometheus)"
promtool="$(command -v promtool || echo /usr/bin/promtool)"
build
fresh_run apps
# The bearer token of every admin listener (Prometheus sends it), generated per run and
# readable by root only.
(umask 077 && printf '%s\n' "$(secret)" >"$run/admin-token")
make_network

# --- MariaDB: a primary and its replica -------------------------------------------------
# The database's own firewall: each account may log in only from the address that
# needs it. The app nodes' account from app1 and app2, the replication account from
# the replica; every other address is refused before any password is asked for.
start_databases "${addr[app1]} ${addr[app2]}" "${addr[db2]}"

# --- Two app nodes: the same apps, the same database ------------------------------------
# The admin listeners let in the monitoring node only (and, on the app nodes, the
# balancer's health checks): this script asks from there too. /readyz needs no token.
ready() { on mon curl -sf -m 2 "http://${addr[$1]}:$admin_port/readyz"; }

echo "starting the app nodes..." >&2
for name in app1 app2; do
    ip="${addr[$name]}"
    mkdir -p "$run/$name"
    {
        app_node_toml "$name"
        cat <<TOML

# The app node's firewall: its site listener takes connections from the balancer
# only; any other is closed at once, without a byte. The balancer is also trusted to
# name the client (X-Forwarded-For, -Proto: the access log shows the real client).
[firewall]
allow = ["${addr[lb]}"]
trusted_proxies = ["${addr[lb]}"]

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
    } >"$run/$name/wharf.toml"
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

$(app_upstream_toml)

# Prometheus scrapes /metrics here: the monitoring node only, with the token.
[admin]
address = "${addr[lb]}:$admin_port"
allow = ["${addr[mon]}"]
token_file = "$run/admin-token"
TOML
start_wharf lb
wait_for lb "ready" ready lb

# --- DNS: foobar.com's names, both at the balancer --------------------------------------
start_dns "${addr[lb]}"

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

up_done
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
