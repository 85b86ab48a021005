#!/usr/bin/env bash
# Builds the release daemon, starts it in a temp dir (local only), runs the local-work
# benchmark with every client (receptorctl's library, a raw classic-socket client, gRPC),
# stops the daemon.  Extra arguments go to local_jobs.py.
#   CARGO_TARGET_DIR  where to build (default: <repo>/target)
#   PYTHON            a python with receptorctl, grpcio and grpcio-tools (default: python3)
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
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$RECEPTOR" --node id=bench datadir="$tmp/data" --log-level warning --local-only \
    --control-service filename="$tmp/bench.sock" \
    --grpc-service filename="$tmp/grpc.sock" \
    --work-command worktype=cat command=cat \
    --work-command worktype=big command=sh "params=-c 'head -c ${BIG_BYTES:-104857600} /dev/zero'" \
    >"$tmp/receptor.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$tmp/bench.sock" ] && break; sleep 0.05; done
[ -S "$tmp/bench.sock" ] || { cat "$tmp/receptor.log"; exit 1; }
echo "receptor: $RECEPTOR ($(git -C "$repo" rev-parse --short HEAD))"
"$python" "$here/local_jobs.py" "$tmp/bench.sock" --grpc-socket "$tmp/grpc.sock" \
    --clients "${CLIENTS:-lib,raw,grpc}" --big-bytes "${BIG_BYTES:-104857600}" "$@"
if grep -q ERROR "$tmp/receptor.log"; then echo "--- daemon log:"; cat "$tmp/receptor.log"; fi
