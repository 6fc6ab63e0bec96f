# shellcheck shell=bash
# The set-up every namespaced example's up.sh shares; sourced, never run.
# The caller sets `here` (its folder), `run` (the run directory), `prefix` (of the
# namespaces' names), `net` (the first three octets of its /24), `addr` (node name →
# address, with a `dns` and a `client` node among them) and `nodes` (the order they are
# plugged in). Sourcing checks that this can run and that no earlier run is in the way,
# and arranges for down.sh to clean up should up.sh stop half-way; the caller then uses,
# in this order:
#   need PROGRAM:PACKAGE...   installs what it needs besides iproute2, dnsmasq, curl, dig
#   build                     the guest apps and wharf (unless given: WHARF_EXAMPLE_GUESTS, WHARF)
#   fresh_run APPS            an empty run directory, the guest apps in $run/APPS
#   make_network              the switch, a namespace per node, the client's resolv.conf
#   start_databases APP_HOSTS REPL_HOST   db1 primary, db2 its replica (MariaDB)
#   app_node_toml NAME, app_upstream_toml   the parts of app nodes' and balancers'
#                             wharf.toml every design shares
#   start_wharf NAME          wharf serve --config $run/NAME/wharf.toml, in NAME's namespace
#   start_dns ADDRESS         foobar.com and www.foobar.com at ADDRESS, answered by the dns node
#   up_done                   up.sh got to its end: nothing to clean up
# and at any point: on NODE CMD..., wait_for NAME WHAT CMD..., ready NAME, secret.

repo="$(cd "$here/../.." && pwd)"
# For down.sh, should this fail half-way.
export WHARF_EXAMPLE_RUN="$run" WHARF_EXAMPLE_PREFIX="$prefix"

# The namespaces' names are this prefix and a node's name: down.sh deletes by them.
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] ||
    { echo "WHARF_EXAMPLE_PREFIX must be letters, digits, - _ . (got '$prefix')" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "up.sh makes network namespaces: run it as root" >&2; exit 1; }

switch="${prefix}switch"
app_port=8080 admin_port=9180 db_port=3306 dns_port=53
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
existing=" $(ip netns list 2>/dev/null | awk '{print $1}' | tr '\n' ' ') "
for ns in "$switch" "${nodes[@]/#/$prefix}"; do
    if [[ "$existing" == *" $ns "* ]]; then
        echo "network namespace $ns exists: run $here/down.sh first" >&2
        exit 1
    fi
done

ok=0
on_exit() {
    [ "$ok" = 1 ] && return
    echo "up did not finish; stopping what it started (logs stay in $run)" >&2
    "$here/down.sh" >&2 || true
}
trap on_exit EXIT
up_done() { ok=1; }

# need PROGRAM:PACKAGE...: installs the Debian packages of the programs missing.
# dnsmasq-base: the program without the package that runs it as the system's resolver.
need() {
    "$repo/tests/need.sh" ip:iproute2 dnsmasq:dnsmasq-base curl:curl dig:bind9-dnsutils "$@"
}

# build: the guest apps (into $guests) and wharf ($WHARF), unless the caller has them.
build() {
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
}

# fresh_run APPS: the run directory emptied (only one an earlier up.sh made, or an empty
# one), with the guest apps and their manifests in $run/APPS.
fresh_run() {
    local apps="$run/$1" wasm manifest found=0
    if [ -n "$(ls -A "$run" 2>/dev/null)" ] && [ ! -e "$run/.wharf-example-run" ]; then
        echo "$run is not empty and not a run directory of this example: not touching it" >&2
        exit 1
    fi
    rm -rf "$run"
    mkdir -p "$apps"
    touch "$run/.wharf-example-run"
    for wasm in "$guests"/*.wasm; do
        [ -e "$wasm" ] || continue
        cp "$wasm" "$apps/"
        found=1
    done
    [ "$found" = 1 ] || { echo "no guest apps (*.wasm) in $guests" >&2; exit 1; }
    for manifest in "$repo"/guest-apps/*/*.toml; do
        [ "$(basename "$manifest")" = Cargo.toml ] || cp "$manifest" "$apps/"
    done
}

# secret: 24 random hex digits.
secret() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

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

# make_network: a switch (a bridge in a namespace of its own), and each node plugged into
# it by a veth pair. Every namespace has its own stack, so these addresses never meet
# the host's (198.18.0.0/15 is set aside for benchmarking networks, RFC 2544).
make_network() {
    local node ns
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
}

# --- MariaDB -----------------------------------------------------------------------------
# The same settings as the test harness (tests/src/mariadb.rs): small InnoDB, GTIDs,
# nothing from /etc/mysql (--no-defaults), admin over the unix socket as root (a unix
# socket is a file: reachable from every namespace, never from the network).
db_tuning=(--innodb-buffer-pool-size=16M --innodb-log-file-size=8M
    --innodb-temp-data-file-path=ibtmp1:1M:autoextend --innodb-flush-log-at-trx-commit=2
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci)
db_as_user=(--user=root)   # mariadbd refuses root without it

# start_databases APP_HOSTS REPL_HOST: one set of system tables and users copied to
# both database nodes; db1 the primary, db2 replicating from it. The app nodes' account
# `wharf` may log in from each of APP_HOSTS (addresses, or %: anywhere), the replication
# account from REPL_HOST (with --skip-name-resolve a host is matched as an address; any
# other is refused before a password is asked for, error 1130). Root: unix socket only.
# The app nodes' password goes to $run/db-password.
start_databases() {
    local app_hosts="$1" repl_host="$2" host db_password repl_password
    mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
    db_password="$(secret)" repl_password="$(secret)"
    (umask 077 && printf '%s\n' "$db_password" >"$run/db-password")
    echo "creating the databases..." >&2
    {
        echo "FLUSH PRIVILEGES;"
        echo "CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
        for host in $app_hosts; do
            echo "CREATE USER 'wharf'@'$host' IDENTIFIED BY '$db_password';"
            echo "GRANT ALL PRIVILEGES ON app.* TO 'wharf'@'$host';"
            echo "GRANT SLAVE MONITOR, PROCESS ON *.* TO 'wharf'@'$host';"
        done
        echo "CREATE USER 'repl'@'$repl_host' IDENTIFIED BY '$repl_password';"
        echo "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'$repl_host';"
    } >"$run/db-setup.sql"
    mkdir -p "$run/db-install-tmp"
    mariadb-install-db --no-defaults --datadir="$run/db-template" --tmpdir="$run/db-install-tmp" \
        --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
        "${db_as_user[@]}" --extra-file="$run/db-setup.sql" "${db_tuning[@]}" \
        >"$run/db-install.log" 2>&1 ||
        { echo "mariadb-install-db failed:" >&2; cat "$run/db-install.log" >&2; exit 1; }
    rm -rf "$run/db-setup.sql" "$run/db-install-tmp"

    start_db db1 1
    start_db db2 2 --read-only=1 --relay-log=relay-bin
    wait_for db1 "accepting connections" sql db1 'SELECT 1'
    wait_for db2 "accepting connections" sql db2 'SELECT 1'
    rm -rf "$run/db-template"
    sql db2 "CHANGE MASTER TO MASTER_HOST='${addr[db1]}', MASTER_PORT=$db_port, \
        MASTER_USER='repl', MASTER_PASSWORD='$repl_password', MASTER_USE_GTID=slave_pos, \
        MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1; START SLAVE;"
    wait_for db2 "replicating from the primary" replicating
}

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
        "${db_as_user[@]}" --skip-name-resolve --server-id="$id" --log-bin=mariadb-bin \
        --log-slave-updates --binlog-format=ROW "${db_tuning[@]}" "$@" \
        </dev/null >>"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}
sql() { mariadb --no-defaults --socket="$run/$1/mysqld.sock" -uroot -e "$2"; }
replicating() {
    local status
    status="$(sql db2 'SHOW SLAVE STATUS\G')"
    grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

# --- wharf and DNS -----------------------------------------------------------------------
# app_node_toml NAME: what every design's app node NAME has in its wharf.toml: its site
# listener, the apps in ../apps, the database cluster. The caller adds its [admin] (and
# any [firewall]).
app_node_toml() {
    cat <<TOML
# App node $1: serves the apps in ../apps; its apps' SQL goes to the cluster below
# (writes to the primary, reads to the replica while it keeps up).
[[listener]]
address = "${addr[$1]}:$app_port"

[apps]
dir = "../apps"

[database]
primary = "mysql://wharf@${addr[db1]}:$db_port/app"
replicas = ["mysql://wharf@${addr[db2]}:$db_port/app"]
password_file = "../db-password"
TOML
}

# app_upstream_toml: every balancer's [[upstream]] "app", the two app nodes.
app_upstream_toml() {
    cat <<TOML
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
TOML
}

# ready NAME: wharf node NAME's /readyz answers 200, asked from its own namespace. (A
# design whose admin listeners let in only some addresses defines its own.)
ready() { on "$1" curl -sf -m 2 "http://${addr[$1]}:$admin_port/readyz"; }

# start_wharf NAME: checks $run/NAME/wharf.toml, then serves it in NAME's namespace.
start_wharf() {
    local name="$1"
    if ! "$WHARF" check --config "$run/$name/wharf.toml" >"$run/$name/check.log" 2>&1; then
        echo "$name: wharf check fails:" >&2
        cat "$run/$name/check.log" >&2
        exit 1
    fi
    # JSON lines (stderr is a file), an access line per request among them.
    setsid ip netns exec "$prefix$name" "$WHARF" serve --config "$run/$name/wharf.toml" \
        </dev/null >"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}

# start_dns ADDRESS: dnsmasq on the dns node, authoritative for foobar.com only
# (--auth-zone) with www.foobar.com and the apex at ADDRESS; nothing forwarded
# (--no-resolv), no /etc/hosts. -k: in the foreground; log lines, with every query, on
# stderr ($run/dns.log). Waits until the client gets both answers.
start_dns() {
    local front="$1" name
    local dnsmasq
    dnsmasq="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
    echo "starting DNS..." >&2
    mkdir -p "$run/dns"
    setsid ip netns exec "${prefix}dns" "$dnsmasq" -k --conf-file=/dev/null --no-resolv --no-hosts \
        --listen-address="${addr[dns]}" --bind-interfaces --port="$dns_port" \
        --pid-file="$run/dns/dnsmasq.pid" --log-facility=- --log-queries \
        --auth-zone=foobar.com --auth-server="ns.foobar.com,${addr[dns]}" \
        --host-record="ns.foobar.com,${addr[dns]}" \
        --host-record="www.foobar.com,$front" --host-record="foobar.com,$front" \
        </dev/null >"$run/dns.log" 2>&1 &
    echo $! >"$run/dns.pid"
    for name in www.foobar.com foobar.com; do
        wait_for dns "answering for $name" resolves "$name" "$front"
    done
}
# resolves NAME ADDRESS: the client, asking the DNS node, gets ADDRESS for NAME.
resolves() { [ "$(on client dig +short +time=1 +tries=1 "@${addr[dns]}" "$1" A)" = "$2" ]; }
