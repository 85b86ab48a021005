#!/usr/bin/env bash
# Builds the release daemon, starts two nodes in a temp dir (node-a: tcp listener on 127.0.0.1
# and the control socket; node-b: tcp peer of node-a with a `cat` work-command and the control
# service that advertises it), runs the
# remote-work benchmark (1 hop, plus the same figures locally on node-a), stops both nodes.
# Extra arguments go to remote_jobs.py.
#   CARGO_TARGET_DIR  where to build (default: <repo>/target)
#   PYTHON            a python with receptorctl (default: python3)
#   RECEPTOR          use this binary instead of building
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
python=${PYTHON:-python3}
if [ -z "${RECEPTOR:-}" ]; then
    (cd "$repo" && cargo build --release -p receptor-server --bin receptor)
    RECEPTOR=$target/release/receptor
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
"$RECEPTOR" --node id=node-a datadir="$tmp/a" --log-level info \
    --tcp-listener bindaddr=127.0.0.1 port=0 \
    --control-service filename="$tmp/a.sock" \
    --work-command worktype=cat command=cat \
    >"$tmp/a.log" 2>&1 &
pids+=($!)
addr=
for _ in $(seq 200); do
    addr=$(sed -n 's/.*tcp listener bound addr=\([^ ]*\).*/\1/p' "$tmp/a.log" | head -1)
    [ -n "$addr" ] && [ -S "$tmp/a.sock" ] && break
    sleep 0.05
done
[ -n "$addr" ] || { cat "$tmp/a.log"; exit 1; }
"$RECEPTOR" --node id=node-b datadir="$tmp/b" --log-level info \
    --tcp-peer address="$addr" redial=true \
    --control-service filename="$tmp/b.sock" \
    --work-command worktype=cat command=cat \
    >"$tmp/b.log" 2>&1 &
pids+=($!)
# Wait until node-a has node-b's advertisement with its work commands.
seen=
for _ in $(seq 200); do
    if "$python" -c '
import sys
from receptorctl.socket_interface import ReceptorControl
rc = ReceptorControl(sys.argv[1]); st = rc.simple_command("status"); rc.close()
ads = st.get("Advertisements") or []
sys.exit(0 if any(ad.get("NodeID") == "node-b" and ad.get("WorkCommands") for ad in ads) else 1)
' "$tmp/a.sock"; then seen=1; break; fi
    sleep 0.1
done
[ -n "$seen" ] || { echo "node-a never saw node-b"; cat "$tmp/a.log" "$tmp/b.log"; exit 1; }
echo "receptor: $RECEPTOR ($(git -C "$repo" rev-parse --short HEAD)); node-a listens on $addr"
"$python" "$here/remote_jobs.py" "$tmp/a.sock" --node node-b "$@"
for n in a b; do
    if grep -qE "ERROR|WARN" "$tmp/$n.log"; then
        echo "--- node-$n log (ERROR/WARN):"; grep -E "ERROR|WARN" "$tmp/$n.log" | head -50
    fi
done
