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
here="$(cd "$(dirname "$0")" && pwd)"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
prefix="${WHARF_EXAMPLE_PREFIX:-wharf-ss-}"
net=198.18.1
declare -A addr=([web]="$net.10" [dns]="$net.53" [client]="$net.100")
nodes=(web dns client)
# shellcheck source=../lib/netns-up.sh
source "$here/../lib/netns-up.sh"
# The admin listener is on the node's own loopback: nothing outside the node reaches
# it (this design has no monitoring to let in).
http_port=80 admin="127.0.0.1:9180"

need
build
# --- The run directory, fresh: the apps, the static files, empty databases --------------
fresh_run web/apps
mkdir -p "$run/web/public" "$run/web/data"
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

make_network

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
start_wharf web
wait_for web "ready" on web curl -sf -m 2 "http://$admin/readyz"

# --- DNS: foobar.com's names, both at the server's address ------------------------------
start_dns "${addr[web]}"

# --- The site answers by name, from the client ------------------------------------------
wait_for web "answering at http://www.foobar.com/hello" on client curl -sf -m 2 "http://www.foobar.com/hello"
wait_for web "answering at http://www.foobar.com/" on client curl -sf -m 2 "http://www.foobar.com/"

up_done
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
