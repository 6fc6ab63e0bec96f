#!/usr/bin/env bash
# Starts the simplest classic web stack on this machine: one server doing everything.
# A single wharf node in a network namespace of its own is the web server (the site
# www.foobar.com, its static files, the apex redirected to www), the application
# server (the guest apps) and the database (each app's SQLite file on the node's
# disk); beside it on one virtual switch (a Linux bridge), a DNS server for foobar.com
# and a client namespace to try it from. The node's config, static files, data, log
# and pid file go into one run directory; waits until the node is ready and the site
# answers by name, then prints how to reach it. Stop it all with down.sh. Needs root
# (namespaces, addresses).
#
# Usage: examples/simple-stack/up.sh
# Environment:
#   WHARF_EXAMPLE_PREFIX    the namespaces' names start with this (default wharf-ss-)
#   WHARF_EXAMPLE_RUN       the run directory (default examples/simple-stack/run)
#   WHARF                   a wharf binary to run (default: built here, debug profile)
#   WHARF_EXAMPLE_GUESTS    a directory of built guest apps (*.wasm) to serve (default:
#                           built here from guest-apps/)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/simple-stack"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-ss-}"
# For down.sh, should this fail half-way.
export WHARF_EXAMPLE_RUN="$run" WHARF_EXAMPLE_PREFIX="$prefix"

# The namespaces' names are this prefix and a node's name: down.sh deletes by them.
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] ||
    { echo "WHARF_EXAMPLE_PREFIX must be letters, digits, - _ . (got '$prefix')" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "up.sh makes network namespaces: run it as root" >&2; exit 1; }

# The network: every namespace has its own stack, so these addresses never meet the
# host's (198.18.0.0/15 is set aside for benchmarking networks, RFC 2544).
net=198.18.1
declare -A addr=([web]="$net.10" [dns]="$net.53" [client]="$net.100")
nodes=(web dns client)
switch="${prefix}switch"
# The admin listener is on the node's own loopback: nothing outside the node reaches
# it (this design has no monitoring to let in).
http_port=80 admin="127.0.0.1:9180" dns_port=53
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

# --- What the nodes need: dnsmasq, the guest apps, wharf ---------------------------------
# dnsmasq-base: the program without the package that runs it as the system's resolver.
"$repo/tests/need.sh" ip:iproute2 dnsmasq:dnsmasq-base curl:curl dig:bind9-dnsutils
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

# --- The run directory, fresh: the apps, the static files, empty databases --------------
# Only a directory an earlier up.sh made (or an empty one) is wiped.
if [ -n "$(ls -A "$run" 2>/dev/null)" ] && [ ! -e "$run/.wharf-example-run" ]; then
    echo "$run is not empty and not a run directory of this example: not touching it" >&2
    exit 1
fi
rm -rf "$run"
mkdir -p "$run/web/apps" "$run/web/public" "$run/web/data"
touch "$run/.wharf-example-run"
found=0
for wasm in "$guests"/*.wasm; do
    [ -e "$wasm" ] || continue
    cp "$wasm" "$run/web/apps/"
    found=1
done
[ "$found" = 1 ] || { echo "no guest apps (*.wasm) in $guests" >&2; exit 1; }
for manifest in "$repo"/guest-apps/*/*.toml; do
    [ "$(basename "$manifest")" = Cargo.toml ] || cp "$manifest" "$run/web/apps/"
done
# The code base's static part: what the web server sends as it is.
cat >"$run/web/public/index.html" <<'HTML'
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>foobar.com</title></head>
<body>
<h1>foobar.com</h1>
<p>One server doing everything: this page is a static file; the links below are apps.</p>
<ul>
<li><a href="/hello">/hello</a></li>
<li><a href="/api/books">/api/books</a></li>
<li><a href="/todo">/todo</a></li>
</ul>
</body>
</html>
HTML

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

# --- The one server: web server, app server and database in one wharf -------------------
echo "starting the server..." >&2
cat >"$run/web/wharf.toml" <<TOML
# The one server: the web server (the site, its static files in public/), the
# application server (the apps in apps/) and the database (each app granted one gets
# its own SQLite file in data/), all in this process on this machine.
[[listener]]
address = "${addr[web]}:$http_port"

# www.foobar.com: the apps' routes (/hello, /api, /todo) first, the static files for
# everything else. The apex and requests by address get a 308 to www (the rest of the
# path kept).
[[site]]
hosts = ["www.foobar.com", "foobar.com"]
canonical_host = "www.foobar.com"
default = true
root = "public"
cache_control = "public, max-age=300"
headers = { X-Content-Type-Options = "nosniff" }
apps = true

[apps]
dir = "apps"
data_dir = "data"

# Probes, /metrics and the status page, on the node's loopback only: there is no
# monitoring node to let in, and nothing else needs them.
[admin]
address = "$admin"
TOML
if ! "$WHARF" check --config "$run/web/wharf.toml" >"$run/web/check.log" 2>&1; then
    echo "web: wharf check fails:" >&2
    cat "$run/web/check.log" >&2
    exit 1
fi
# setsid: the node outlives this script and the terminal it ran in. JSON lines (stderr
# is a file), an access line per request among them.
setsid ip netns exec "${prefix}web" "$WHARF" serve --config "$run/web/wharf.toml" \
    </dev/null >"$run/web.log" 2>&1 &
echo $! >"$run/web.pid"
wait_for web "ready" on web curl -sf -m 2 "http://$admin/readyz"

# --- DNS: foobar.com's names, both at the server's address ------------------------------
# Authoritative for foobar.com only (--auth-zone); nothing forwarded (--no-resolv), no
# /etc/hosts. -k: in the foreground; log lines, with every query, on stderr (this file).
echo "starting DNS..." >&2
mkdir -p "$run/dns"
setsid ip netns exec "${prefix}dns" "$dnsmasq" -k --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address="${addr[dns]}" --bind-interfaces --port="$dns_port" \
    --pid-file="$run/dns/dnsmasq.pid" --log-facility=- --log-queries \
    --auth-zone=foobar.com --auth-server="ns.foobar.com,${addr[dns]}" \
    --host-record="ns.foobar.com,${addr[dns]}" \
    --host-record="www.foobar.com,${addr[web]}" --host-record="foobar.com,${addr[web]}" \
    </dev/null >"$run/dns.log" 2>&1 &
echo $! >"$run/dns.pid"
resolves() { [ "$(on client dig +short +time=1 +tries=1 "@${addr[dns]}" "$1" A)" = "${addr[web]}" ]; }
wait_for dns "answering for www.foobar.com" resolves www.foobar.com
wait_for dns "answering for foobar.com" resolves foobar.com

# --- The site answers by name, from the client ------------------------------------------
wait_for web "answering at http://www.foobar.com/hello" on client curl -sf -m 2 "http://www.foobar.com/hello"
wait_for web "answering at http://www.foobar.com/" on client curl -sf -m 2 "http://www.foobar.com/"

ok=1
cat <<EOF
up: the one-server stack runs (config, static files, data and logs in $run)
  server     web ${addr[web]}: site :$http_port (www.foobar.com; foobar.com redirects to it), admin $admin inside ${prefix}web
             static files $run/web/public, apps $run/web/apps, SQLite $run/web/data
  DNS        ${addr[dns]}:$dns_port, foobar.com and www.foobar.com A ${addr[web]}
try, from the client namespace (its resolv.conf names the DNS node):
  ip netns exec ${prefix}client dig +short @${addr[dns]} www.foobar.com
  ip netns exec ${prefix}client curl -s http://www.foobar.com/
  ip netns exec ${prefix}client curl -s http://www.foobar.com/hello
  ip netns exec ${prefix}client curl -sI http://foobar.com/hello
  ip netns exec ${prefix}client curl -s http://www.foobar.com/todo -d '{"title": "first"}'
  ip netns exec ${prefix}client curl -s http://www.foobar.com/todo
  ip netns exec ${prefix}web curl -s http://$admin/status.json
the server dies: kill "\$(cat $run/web.pid)"
stop: $here/down.sh
EOF
