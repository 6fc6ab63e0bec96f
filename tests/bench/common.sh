# Shared by the benchmark scripts (sourced): starting pinned servers and loading them
# with wrk. Expects $work (a scratch directory), $conns, $duration and the array $pids.

# start NAME CMD...: runs CMD pinned to CPU 0 (or the list $cpus), waits for its
# listening line, sets $addr and $pid.
start() {
    local name="$1"; shift
    taskset -c "${cpus:-0}" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 600); do
        addr="$(sed -n 's|^listening on http://||p' "$work/$name.out" | head -1)"
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "$name did not start" >&2; cat "$work/$name.err" >&2; exit 1
}

# cpu_ticks PID: the user and system CPU time process PID has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# load URL [WRK ARGS...]: prints "RPS P99_MS" from one wrk run on CPU 1, after a short
# warm-up. Any non-2xx answer fails the script. With $server_pid set, also writes to
# $work/cpu the server's CPU time per response in µs: with the server saturated it is
# the inverse of its throughput, and says what a request costs. With perf installed,
# also writes to $work/wakes how often the client's CPU went idle and had to be woken,
# per response: on a VM each such wake-up costs the sending server several microseconds.
load() {
    local url="$1"; shift
    taskset -c 1 wrk -t1 -c"$conns" -d2s "$@" "$url" >/dev/null
    local count=() ticks_before=""
    command -v perf >/dev/null && count=(perf stat -x, -o "$work/perf.txt" -e context-switches -a -C 1 --)
    [ -n "${server_pid:-}" ] && ticks_before=$(cpu_ticks "$server_pid")
    "${count[@]}" taskset -c 1 wrk -t1 -c"$conns" -d"${duration}s" --latency "$@" "$url" >"$work/wrk.txt"
    local requests
    requests="$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
    if [ -n "$ticks_before" ]; then
        awk -v t="$(( $(cpu_ticks "$server_pid") - ticks_before ))" -v hz="$(getconf CLK_TCK)" \
            -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }' >"$work/cpu"
    else
        echo "-" >"$work/cpu"
    fi
    if grep -q "Non-2xx" "$work/wrk.txt"; then echo "errors in run of $url:" >&2; cat "$work/wrk.txt" >&2; exit 1; fi
    local rps p99
    rps="$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.txt")"
    p99="$(awk '$1 == "99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.txt")"
    if [ ${#count[@]} -gt 0 ]; then
        # Each sleep and wake of the client is two context switches on its CPU.
        awk -F, -v n="$requests" \
            '$3 == "context-switches" {printf "%.2f", $1 / 2 / n}' "$work/perf.txt" >"$work/wakes"
    else
        echo "-" >"$work/wakes"
    fi
    echo "$rps $p99"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# table_header, then table_row LABEL RPS P99_MS BASELINE_RPS per server: the result
# table every benchmark prints, each row with its ratio to the baseline's requests/s.
table_header() { printf '%-44s %12s %10s %8s\n' "server" "requests/s" "p99 ms" "ratio"; }
table_row() { printf '%-44s %12.0f %10.2f %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$4")"; }

# build_at REV DEST: builds wharf (release) at commit REV in a temporary worktree under
# $work, with this checkout's target directory (so dependencies are built once), and
# copies the binary to DEST. Run it before building this checkout, so that
# target/release/wharf is left as this checkout's. The caller's cleanup removes the
# worktree ($work/base).
build_at() {
    local rev="$1" dest="$2" target="${CARGO_TARGET_DIR:-$repo/target}"
    git -C "$repo" worktree add --quiet --detach "$work/base" "$rev"
    (cd "$work/base" && CARGO_TARGET_DIR="$target" cargo build --quiet --release -p wharf --bin wharf)
    cp "$target/release/wharf" "$dest"
}
