#!/usr/bin/env bash
# CPU time an idle daemon spends following running units: starts the daemon (local only),
# submits UNITS `sleep` units, waits until all are Running, then reads the daemon's
# utime+stime from /proc/<pid>/stat before and after WINDOW seconds.
#   RECEPTOR   the binary (required)
#   PYTHON     a python with receptorctl (default: python3)
#   UNITS      default 100;  WINDOW  seconds, default 30
set -euo pipefail
: "${RECEPTOR:?set RECEPTOR to the receptor binary}"
python=${PYTHON:-python3}
units=${UNITS:-100}
window=${WINDOW:-30}
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$RECEPTOR" --node id=idle datadir="$tmp/data" --log-level warning --local-only \
    --control-service filename="$tmp/idle.sock" \
    --work-command worktype=sleep command=sleep params=600 \
    >"$tmp/receptor.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$tmp/idle.sock" ] && break; sleep 0.05; done
"$python" - "$tmp/idle.sock" "$units" <<'PY'
import sys, time
from receptorctl.socket_interface import ReceptorControl
sock, n = sys.argv[1], int(sys.argv[2])
ids = []
for _ in range(n):
    rc = ReceptorControl(sock)
    ids.append(rc.submit_work("sleep", b"", node="localhost")["unitid"])
    rc.close()
deadline = time.time() + 120
while time.time() < deadline:
    rc = ReceptorControl(sock)
    units = rc.simple_command("work list")
    rc.close()
    if sum(1 for u in ids if units.get(u, {}).get("StateName") == "Running") == n:
        break
    time.sleep(0.5)
else:
    sys.exit("units did not all reach Running")
PY
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$window"
after=$(ticks)
echo "receptor: $RECEPTOR"
echo "$units running sleep units, ${window}s idle: daemon CPU $(( (after - before) * 1000 / hz )) ms"
# Runners outlive the daemon by design: release the units so their runners stop.
"$python" - "$tmp/idle.sock" <<'PY'
import sys
from receptorctl.socket_interface import ReceptorControl
rc = ReceptorControl(sys.argv[1])
units = rc.simple_command("work list")
rc.close()
for unit in units:
    rc = ReceptorControl(sys.argv[1])
    rc.simple_command(f"work force-release {unit}")
    rc.close()
PY
