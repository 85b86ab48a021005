#!/usr/bin/env python3
"""Remote (1 hop) vs local small-job rate and payload round trip, through receptorctl's library.

Run against node-a's control socket; node-b is a tcp peer of node-a with a `cat` work-command
(bench/work/run-remote.sh sets this up).  Same job as local_jobs.py's `lib` client:
submit (worktype `cat`, 15-byte payload, node=NODE) -> follow the results stream to EOF (it
ends only once the unit is final) -> check the bytes -> `work status` (must be Succeeded) ->
`work release`.  One job at a time, so jobs/s = 1 / mean latency.  `local` runs the same job
on node-a itself (node=None, i.e. localhost), in the same run.

Payload round trip: submit `cat` with an N-byte payload (random bytes streamed from a temp
file) -> stream the N bytes of results back -> `work status` + `work release`; timed per phase.
The round trip is submit + results (what `receptorctl work submit -f` waits for).

Usage: remote_jobs.py SOCKET [--node node-b] [--jobs N] [--warmup N]
                      [--sizes 50000000,500000000] [--skip-local] [--skip-jobs] [--json]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from receptorctl.socket_interface import ReceptorControl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_jobs import PAYLOAD, pct  # noqa: E402


PHASES = ("submit", "results", "status", "release")


def job(sock, node, phases=None):
    t = [time.perf_counter()]
    rc = ReceptorControl(sock)
    unit = rc.submit_work("cat", PAYLOAD, node=node)["unitid"]
    t.append(time.perf_counter())
    rc = ReceptorControl(sock)
    f = rc.get_work_results(unit, return_sockfile=True)
    data = f.read()
    f.close()
    t.append(time.perf_counter())
    if data.decode() != PAYLOAD:
        raise RuntimeError(f"unit {unit}: unexpected results {data[:80]!r}")
    rc = ReceptorControl(sock)
    st = rc.simple_command(f"work status {unit}")
    t.append(time.perf_counter())
    if st.get("StateName") != "Succeeded":
        raise RuntimeError(f"unit {unit}: status {st}")
    rc.simple_command(f"work release {unit}")
    rc.close()
    t.append(time.perf_counter())
    if phases is not None:
        for i, name in enumerate(PHASES):
            phases.setdefault(name, []).append((t[i + 1] - t[i]) * 1000.0)


def run_jobs(label, sock, node, jobs, warmup):
    for _ in range(warmup):
        job(sock, node)
    lat = []
    phases = {}
    t0 = time.perf_counter()
    for _ in range(jobs):
        s = time.perf_counter()
        job(sock, node, phases)
        lat.append((time.perf_counter() - s) * 1000.0)
    wall = time.perf_counter() - t0
    lat.sort()
    ph = {}
    for name, v in phases.items():
        v.sort()
        ph[name] = {"p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2),
                    "max_ms": round(v[-1], 2), "over_500ms": sum(1 for x in v if x > 500)}
    return {"where": label, "jobs": jobs, "wall_s": round(wall, 3),
            "jobs_per_s": round(jobs / wall, 1),
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(lat[-1], 2), "mean_ms": round(statistics.mean(lat), 2),
            "over_500ms": sum(1 for x in lat if x > 500), "phases": ph}


def round_trip(sock, node, path, size):
    t0 = time.perf_counter()
    rc = ReceptorControl(sock)
    with open(path, "rb") as payload:
        unit = rc.submit_work("cat", payload, node=node)["unitid"]
    t1 = time.perf_counter()
    rc = ReceptorControl(sock)
    f = rc.get_work_results(unit, return_sockfile=True)
    n = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
    f.close()
    t2 = time.perf_counter()
    rc = ReceptorControl(sock)
    st = rc.simple_command(f"work status {unit}")
    rc.simple_command(f"work release {unit}")
    rc.close()
    t3 = time.perf_counter()
    if n != size or st.get("StateName") != "Succeeded":
        raise RuntimeError(f"unit {unit}: got {n} of {size} bytes, status {st.get('StateName')}")
    return {"bytes": size, "round_trip_s": round(t2 - t0, 3), "submit_s": round(t1 - t0, 3),
            "results_s": round(t2 - t1, 3), "status_release_s": round(t3 - t2, 3),
            "MB_per_s": round(size / (t2 - t0) / 1e6, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--node", default="node-b")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--sizes", default="50000000,500000000")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-jobs", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    def up():
        return os.popen("uptime").read().strip()

    wheres = [("remote", a.node)] + ([] if a.skip_local else [("local", None)])
    out = {"jobs": [], "payload": []}
    for label, node in ([] if a.skip_jobs else wheres):
        r = run_jobs(label, a.socket, node, a.jobs, a.warmup)
        r["uptime"] = up()
        out["jobs"].append(r)
        if not a.json:
            print(f"small jobs [{label}]: {r['jobs']} jobs in {r['wall_s']} s = {r['jobs_per_s']} jobs/s;"
                  f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms,"
                  f" {r['over_500ms']} over 500 ms  | {r['uptime']}", flush=True)
            print("    per phase: " + "; ".join(
                f"{n} p50 {v['p50_ms']} / p99 {v['p99_ms']} / max {v['max_ms']} ms ({v['over_500ms']} > 500)"
                for n, v in r["phases"].items()), flush=True)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    for size in sizes:
        fd, path = tempfile.mkstemp(prefix="payload-")
        try:
            with os.fdopen(fd, "wb") as f:
                chunk = os.urandom(1 << 20)
                left = size
                while left:
                    k = min(left, len(chunk))
                    f.write(chunk[:k])
                    left -= k
            for label, node in wheres:
                r = round_trip(a.socket, node, path, size)
                r["where"] = label
                r["uptime"] = up()
                out["payload"].append(r)
                if not a.json:
                    print(f"{size / 1e6:g} MB cat [{label}]: round trip {r['round_trip_s']} s"
                          f" ({r['MB_per_s']} MB/s; submit+upload {r['submit_s']} s, results"
                          f" {r['results_s']} s), status+release {r['status_release_s']} s"
                          f"  | {r['uptime']}", flush=True)
        finally:
            os.unlink(path)
    if a.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
