#!/usr/bin/env python3
"""Local small-job rate and big-result streaming against a running receptor node.

Each "job" is: submit (worktype `cat`, small payload) -> wait (follow the results stream to
EOF: the stream ends only once the unit is final) -> results check -> `work status` (must be
Succeeded) -> `work release`.  Jobs run sequentially, one at a time, so jobs/s = 1/mean latency.

Three clients:
  lib  - receptorctl's Python library (ReceptorControl), as receptorctl users drive a node;
  raw  - a raw Unix-socket client speaking the control line protocol directly (no
         receptorctl parsing overhead, one connection per step, like the library);
  grpc - the gRPC API (`grpc-service` socket, --grpc-socket) through Python grpcio stubs
         generated from proto/ at start-up (needs grpcio and grpcio-tools): one channel, the
         same steps (Submit, Results following to the end, Get, Release).

Then `big`: time to stream the 100 MB result of one unit (worktype `big`), with both clients.

Usage: local_jobs.py SOCKET [--grpc-socket PATH] [--jobs N] [--warmup N] [--big-bytes N] [--skip-big] [--skip-jobs]
                     [--clients lib,raw] [--json]
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

from receptorctl.socket_interface import ReceptorControl

PAYLOAD = "hello receptor\n"


# ---------------------------------------------------------------- library client
def lib_job(sock, payload=PAYLOAD):
    rc = ReceptorControl(sock)
    res = rc.submit_work("cat", payload)
    unit = res["unitid"]
    rc = ReceptorControl(sock)
    f = rc.get_work_results(unit, return_sockfile=True)
    data = f.read()
    f.close()
    if data.decode() != payload:
        raise RuntimeError(f"unit {unit}: unexpected results {data[:80]!r}")
    rc = ReceptorControl(sock)
    st = rc.simple_command(f"work status {unit}")
    if st.get("StateName") != "Succeeded":
        raise RuntimeError(f"unit {unit}: status {st}")
    rel = rc.simple_command(f"work release {unit}")
    rc.close()
    return unit


def wait_done(sock, unit):
    """Polls `work status` until the unit is final (used to time a stream of stored results)."""
    while True:
        rc = ReceptorControl(sock)
        st = rc.simple_command(f"work status {unit}")
        rc.close()
        if st.get("State", 0) >= 2:
            return st
        time.sleep(0.01)


def lib_big(sock, expect, stored=False):
    """stored=False: submit -> stream while the command writes -> release (end to end).
    stored=True: the unit finished first; times only the results stream."""
    rc = ReceptorControl(sock)
    unit = rc.submit_work("big", "")["unitid"]
    if stored:
        wait_done(sock, unit)
    t0 = time.perf_counter()
    rc = ReceptorControl(sock)
    f = rc.get_work_results(unit, return_sockfile=True)
    n = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
    f.close()
    streamed = time.perf_counter() - t0
    rc = ReceptorControl(sock)
    rc.simple_command(f"work release {unit}")
    rc.close()
    if n != expect:
        raise RuntimeError(f"big: got {n} bytes, expected {expect}")
    return streamed


# ---------------------------------------------------------------- raw socket client
class Raw:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        greet = self.line()
        if not greet.startswith("Receptor Control, node "):
            raise RuntimeError(f"bad greeting {greet!r}")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError(f"EOF before line, have {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def rest(self, sink=None):
        n = len(self.buf)
        if sink is not None:
            sink.append(self.buf)
        self.buf = b""
        while True:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                return n
            n += len(chunk)
            if sink is not None:
                sink.append(chunk)

    def close(self):
        self.s.close()


def raw_submit(path, worktype, payload):
    c = Raw(path)
    c.s.sendall(json.dumps({"command": "work", "subcommand": "submit",
                            "node": "localhost", "worktype": worktype}).encode() + b"\n")
    line = c.line()
    if not line.startswith("Work unit created with ID "):
        raise RuntimeError(line)
    c.s.sendall(payload)
    c.s.shutdown(socket.SHUT_WR)
    res = json.loads(c.line())
    c.close()
    return res["unitid"]


def raw_results(path, unit, sink=None):
    c = Raw(path)
    c.s.sendall(f"work results {unit} 0\n".encode())
    line = c.line()
    if not line.startswith("Streaming results for work unit"):
        raise RuntimeError(line)
    c.s.shutdown(socket.SHUT_WR)
    n = c.rest(sink)
    c.close()
    return n


def raw_cmd(c, cmd):
    c.s.sendall(cmd.encode() + b"\n")
    return json.loads(c.line())


def raw_job(path, payload=PAYLOAD.encode()):
    unit = raw_submit(path, "cat", payload)
    got = []
    raw_results(path, unit, got)
    if b"".join(got) != payload:
        raise RuntimeError(f"unit {unit}: unexpected results {b''.join(got)[:80]!r}")
    c = Raw(path)
    st = raw_cmd(c, f"work status {unit}")
    if st.get("StateName") != "Succeeded":
        raise RuntimeError(f"unit {unit}: status {st}")
    raw_cmd(c, f"work release {unit}")
    c.close()
    return unit


def raw_big(path, expect, stored=False):
    unit = raw_submit(path, "big", b"")
    if stored:
        wait_done(path, unit)
    t0 = time.perf_counter()
    n = raw_results(path, unit)
    streamed = time.perf_counter() - t0
    c = Raw(path)
    raw_cmd(c, f"work release {unit}")
    c.close()
    if n != expect:
        raise RuntimeError(f"big: got {n} bytes, expected {expect}")
    return streamed


# ---------------------------------------------------------------- gRPC client
class Grpc:
    """Stubs generated from the repository's proto/ into a temp dir, one channel per run."""

    def __init__(self, path):
        import importlib
        import tempfile

        import grpc
        from grpc_tools import protoc

        proto = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
        out = tempfile.mkdtemp(prefix="receptor-grpc-stubs-")
        include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        files = ["receptor/v1/mesh.proto", "receptor/v1/work.proto"]
        rc = protoc.main(["protoc", f"-I{proto}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}"] + files)
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc})")
        sys.path.insert(0, out)
        self.pb = importlib.import_module("receptor.v1.work_pb2")
        grpc_mod = importlib.import_module("receptor.v1.work_pb2_grpc")
        # tonic (h2) refuses the socket path grpcio sends as :authority by default.
        self.channel = grpc.insecure_channel(
            f"unix:{path}", options=[("grpc.default_authority", "localhost")])
        self.work = grpc_mod.WorkStub(self.channel)

    def submit(self, worktype, payload):
        pb = self.pb
        msgs = [pb.SubmitRequest(header=pb.SubmitHeader(work_type=worktype, node="localhost"))]
        if payload:
            msgs.append(pb.SubmitRequest(payload=payload))
        return self.work.Submit(iter(msgs)).unit.unit_id

    def results(self, unit, sink=None):
        n = 0
        end = None
        for r in self.work.Results(self.pb.ResultsRequest(unit_id=unit, offset=0, follow=True)):
            if r.HasField("end"):
                end = r.end
            else:
                n += len(r.data)
                if sink is not None:
                    sink.append(r.data)
        if end is None or end.end_offset != n:
            raise RuntimeError(f"unit {unit}: results without a matching end ({end}, {n} bytes)")
        return n

    def release(self, unit):
        self.work.Release(self.pb.ReleaseRequest(unit_id=unit))


def grpc_job(g, payload=PAYLOAD.encode()):
    unit = g.submit("cat", payload)
    got = []
    g.results(unit, got)
    if b"".join(got) != payload:
        raise RuntimeError(f"unit {unit}: unexpected results {b''.join(got)[:80]!r}")
    st = g.work.Get(g.pb.GetRequest(unit_id=unit))
    if st.state != g.pb.WORK_STATE_SUCCEEDED:
        raise RuntimeError(f"unit {unit}: status {st}")
    g.release(unit)
    return unit


def grpc_big(g, expect, stored=False):
    unit = g.submit("big", b"")
    if stored:
        while g.work.Get(g.pb.GetRequest(unit_id=unit)).state < g.pb.WORK_STATE_SUCCEEDED:
            time.sleep(0.01)
    t0 = time.perf_counter()
    n = g.results(unit)
    streamed = time.perf_counter() - t0
    g.release(unit)
    if n != expect:
        raise RuntimeError(f"big: got {n} bytes, expected {expect}")
    return streamed


# ---------------------------------------------------------------- driver
def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def run_jobs(name, fn, sock, jobs, warmup):
    for _ in range(warmup):
        fn(sock)
    lat = []
    t0 = time.perf_counter()
    for _ in range(jobs):
        s = time.perf_counter()
        fn(sock)
        lat.append((time.perf_counter() - s) * 1000.0)
    wall = time.perf_counter() - t0
    lat.sort()
    return {"client": name, "jobs": jobs, "wall_s": round(wall, 3),
            "jobs_per_s": round(jobs / wall, 1),
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(lat[-1], 2), "mean_ms": round(statistics.mean(lat), 2)}


def run_big(name, fn, sock, size):
    s = time.perf_counter()
    fn(sock, size)
    t = time.perf_counter() - s
    st = fn(sock, size, stored=True)
    return {"client": name, "bytes": size, "seconds": round(t, 3),
            "MB_per_s": round(size / t / 1e6, 1),
            "stored_stream_s": round(st, 3), "stored_MB_per_s": round(size / st / 1e6, 1)}


def size_label(n):
    return f"{n / 1048576:g} MiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--grpc-socket")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--big-bytes", type=int, default=104857600)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-jobs", action="store_true")
    ap.add_argument("--clients", default="lib,raw")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {"uptime": os.popen("uptime").read().strip(), "jobs": [], "big": []}
    clients = a.clients.split(",")
    targets = {"lib": a.socket, "raw": a.socket}
    if "grpc" in clients:
        if not a.grpc_socket:
            ap.error("the grpc client needs --grpc-socket")
        targets["grpc"] = Grpc(a.grpc_socket)
    for name in ([] if a.skip_jobs else clients):
        fn = {"lib": lib_job, "raw": raw_job, "grpc": grpc_job}[name]
        r = run_jobs(name, fn, targets[name], a.jobs, a.warmup)
        r["uptime"] = os.popen("uptime").read().strip()
        out["jobs"].append(r)
        if not a.json:
            print(f"small jobs [{name}]: {r['jobs']} jobs in {r['wall_s']} s = {r['jobs_per_s']} jobs/s;"
                  f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms  | {r['uptime']}",
                  flush=True)
    if not a.skip_big:
        for name in clients:
            fn = {"lib": lib_big, "raw": raw_big, "grpc": grpc_big}[name]
            r = run_big(name, fn, targets[name], a.big_bytes)
            r["uptime"] = os.popen("uptime").read().strip()
            out["big"].append(r)
            if not a.json:
                print(f"{size_label(a.big_bytes)} results [{name}]: end to end (submit, stream while written,"
                      f" release) {r['seconds']} s ({r['MB_per_s']} MB/s); stream of the finished unit"
                      f" {r['stored_stream_s']} s ({r['stored_MB_per_s']} MB/s)  | {r['uptime']}",
                      flush=True)
    if a.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
