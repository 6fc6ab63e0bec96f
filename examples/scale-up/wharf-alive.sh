#!/usr/bin/env bash
# keepalived's check that its wharf is alive (a vrrp_script, run every second): looks
# at URL (wharf's /healthz) every 0.1 s for most of that second and fails at the
# second failed look in a row. A killed wharf cannot write its track file, so this is
# how keepalived learns of it: within about 0.2 s, where one look a second, failing
# twice, takes up to two seconds. One slow answer is not yet a failover.
#
# Usage (in keepalived.conf): script "/bin/bash /path/to/wharf-alive.sh URL"
set -u
url="$1"
now() { local t="${EPOCHREALTIME/[.,]/}"; echo "${t::-3}"; }   # milliseconds
end=$(($(now) + 850))
misses=0
while [ "$(now)" -lt "$end" ]; do
    if curl -sf -o /dev/null -m 0.3 "$url"; then
        misses=0
    else
        misses=$((misses + 1))
        [ "$misses" -lt 2 ] || exit 1
    fi
    sleep 0.1
done
exit 0
