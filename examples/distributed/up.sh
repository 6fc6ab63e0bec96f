#!/usr/bin/env bash
# Starts the classic distributed web stack on this machine, each node on its own
# loopback address: a MariaDB primary and a replica (real replication), two wharf app
# nodes serving the same apps from that database, and a wharf load balancer in front
# of them. Every node's data, log and pid file go into one run directory; waits until
# each node is ready, then prints the URLs. Stop it all with down.sh.
#
# Usage: examples/distributed/up.sh
# Environment:
#   WHARF_EXAMPLE_NET  the first three octets of the nodes' addresses (default 127.0.10)
#   WHARF_EXAMPLE_RUN  the run directory (default examples/distributed/run)
#   WHARF              a wharf binary to run (default: built here, debug profile)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/examples/distributed"
net="${WHARF_EXAMPLE_NET:-127.0.10}"
run="${WHARF_EXAMPLE_RUN:-$here/run}"
export WHARF_EXAMPLE_RUN="$run"   # for down.sh, should this fail half-way

lb="$net.1" app1="$net.11" app2="$net.12" primary="$net.21" replica="$net.22"
http_port=8080 admin_port=9180 db_port=3306
# Each check of readiness is tried this often, 0.1 s apart: a minute.
polls=600

for pid_file in "$run"/*.pid; do
    [ -e "$pid_file" ] || continue
    pid="$(<"$pid_file")"
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$run/"; then
        echo "$(basename "$pid_file" .pid) is already running (pid $pid): run $here/down.sh first" >&2
        exit 1
    fi
done

# --- What the nodes need: MariaDB, the guest apps, wharf --------------------------------
"$repo/tests/need.sh" mariadbd:mariadb-server
mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
echo "building guest apps..." >&2
# The guests are their own workspace, with their own target directory.
(cd "$repo/guest-apps" && env -u CARGO_TARGET_DIR cargo build --quiet --release --target wasm32-wasip2)
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
mkdir -p "$run/apps" "$run/lb/apps"
touch "$run/.wharf-example-run"
for wasm in "$repo"/guest-apps/target/wasm32-wasip2/release/*.wasm; do cp "$wasm" "$run/apps/"; done
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

# wait_for NAME WHAT CMD...: polls CMD until it succeeds while node NAME runs; on
# failure quotes the end of the node's log.
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

# --- MariaDB: one set of system tables and users, copied to both nodes -----------------
# The same settings as the test harness (tests/src/mariadb.rs): small InnoDB, GTIDs,
# nothing from /etc/mysql (--no-defaults), admin over the unix socket as root.
tuning=(--innodb-buffer-pool-size=16M --innodb-log-file-size=8M
    --innodb-temp-data-file-path=ibtmp1:1M:autoextend --innodb-flush-log-at-trx-commit=2
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci)
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(--user=root)   # mariadbd refuses root without it
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

# start_db NAME ADDRESS SERVER_ID [MARIADBD ARGS...]
start_db() {
    local name="$1" ip="$2" id="$3"
    shift 3
    mkdir -p "$run/$name"
    cp -a "$run/db-template" "$run/$name/data"
    # setsid: the node outlives this script and the terminal it ran in.
    setsid "$mariadbd" --no-defaults --datadir="$run/$name/data" --tmpdir="$run/$name" \
        --socket="$run/$name/mysqld.sock" --pid-file="$run/$name/mysqld.pid" \
        --log-error="$run/$name.log" --bind-address="$ip" --port="$db_port" "${as_user[@]}" \
        --skip-name-resolve --server-id="$id" --log-bin=mariadb-bin --log-slave-updates \
        --binlog-format=ROW "${tuning[@]}" "$@" </dev/null >>"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}
sql() { mariadb --no-defaults --socket="$run/$1/mysqld.sock" -uroot -e "$2"; }
replicating() {
    local status
    status="$(sql db-replica 'SHOW SLAVE STATUS\G')"
    grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

start_db db-primary "$primary" 1
start_db db-replica "$replica" 2 --read-only=1 --relay-log=relay-bin
wait_for db-primary "accepting connections" sql db-primary 'SELECT 1'
wait_for db-replica "accepting connections" sql db-replica 'SELECT 1'
rm -rf "$run/db-template"
sql db-replica "CHANGE MASTER TO MASTER_HOST='$primary', MASTER_PORT=$db_port, \
    MASTER_USER='repl', MASTER_PASSWORD='$repl_password', MASTER_USE_GTID=slave_pos, \
    MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
wait_for db-replica "replicating from the primary" replicating

# --- Two app nodes: the same apps, the same database ------------------------------------
start_wharf() {
    local name="$1"
    # JSON lines (stderr is a file), an access line per request among them.
    setsid "$WHARF" serve --config "$run/$name/wharf.toml" \
        </dev/null >"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}
ready() { curl -sf "http://$1:$admin_port/readyz"; }

for node in app-1:"$app1" app-2:"$app2"; do
    name="${node%%:*}" ip="${node#*:}"
    mkdir -p "$run/$name"
    cat >"$run/$name/wharf.toml" <<TOML
# App node $name: serves the apps in ../apps; its apps' SQL goes to the cluster below
# (writes to the primary, reads to the replica while it keeps up).
[[listener]]
address = "$ip:$http_port"

[apps]
dir = "../apps"

[database]
primary = "mysql://wharf@$primary:$db_port/app"
replicas = ["mysql://wharf@$replica:$db_port/app"]
password_file = "../db-password"

# The balancer checks /readyz here. On SIGTERM it turns 503 and the node keeps serving
# this long, longer than the balancer's checks take to notice (interval × fall).
[admin]
address = "$ip:$admin_port"
drain_delay_ms = 1500
TOML
    start_wharf "$name"
done
mkdir -p "$run/lb"
cat >"$run/lb/wharf.toml" <<TOML
# The load balancer: every request to $lb:$http_port goes to one of the app nodes,
# round robin, skipping a node whose /readyz fails.
[[listener]]
address = "$lb:$http_port"

[apps]
dir = "apps"

[[site]]
hosts = ["localhost"]
default = true
apps = false
routes = [{ path = "/", upstream = "app" }]

[[upstream]]
name = "app"
algorithm = "round_robin"
servers = [{ address = "$app1:$http_port" }, { address = "$app2:$http_port" }]

# Each node's admin listener: down after 2 failed checks, up after 2 good ones.
[upstream.health_check]
path = "/readyz"
port = $admin_port
interval_ms = 500
rise = 2
fall = 2

[admin]
address = "$lb:$admin_port"
TOML
wait_for app-1 "ready" ready "$app1"
wait_for app-2 "ready" ready "$app2"
start_wharf lb
wait_for lb "ready" ready "$lb"
wait_for lb "answering through the app nodes" curl -sf "http://$lb:$http_port/hello"

ok=1
cat <<EOF
up: the distributed stack runs (data and logs in $run)
  load balancer  http://$lb:$http_port/        status: http://$lb:$admin_port/upstreams
  app node 1     http://$app1:$http_port/       ready:  http://$app1:$admin_port/readyz
  app node 2     http://$app2:$http_port/       ready:  http://$app2:$admin_port/readyz
  db primary     mysql://wharf@$primary:$db_port/app   (password in $run/db-password)
  db replica     mysql://wharf@$replica:$db_port/app
try:  curl -s http://$lb:$http_port/todo -d '{"title": "first"}'; curl -s http://$lb:$http_port/todo
stop: $here/down.sh
EOF
