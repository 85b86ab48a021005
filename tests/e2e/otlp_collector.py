"""A minimal OTLP/gRPC collector for the telemetry tests.

Serves opentelemetry.proto.collector.trace.v1.TraceService/Export and the metrics service's
Export (written to `<file>.metrics`, see `Metrics`) on 127.0.0.1, port 0. Prints
`listening on PORT` once ready, then appends one JSON line per received span to the file
given as the first argument (with a certificate and key file as second and third arguments,
it serves TLS):

    {"service": ..., "node": ..., "name": ..., "trace_id": hex, "span_id": hex,
     "parent_span_id": hex or "", "attributes": {key: value}}

The generated modules come from the PyPI package `opentelemetry-proto`, the server from
`grpcio`. Stops on SIGTERM or when stdin closes.
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return value
    return str(value)


def attributes(key_values):
    return {kv.key: value_of(kv.value) for kv in key_values}


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": resource.get("service.name"),
                                "node": resource.get("node.id"),
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "attributes": attributes(span.attributes),
                            }
                        )
                    )
        with self.lock:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Appends one JSON line per data point to `<file>.metrics`:

    {"node": ..., "name": ..., "kind": "sum"|"gauge"|..., "attributes": {...}, "value": n}
    """

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for resource_metrics in request.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    if kind not in ("sum", "gauge"):
                        continue
                    for point in getattr(metric, kind).data_points:
                        value = getattr(point, point.WhichOneof("value"))
                        lines.append(
                            json.dumps(
                                {
                                    "node": resource.get("node.id"),
                                    "name": metric.name,
                                    "kind": kind,
                                    "attributes": attributes(point.attributes),
                                    "value": value,
                                }
                            )
                        )
        with self.lock:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    out = open(sys.argv[1], "a", encoding="utf-8")
    metrics_out = open(sys.argv[1] + ".metrics", "a", encoding="utf-8")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(out), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(metrics_out), server)
    if len(sys.argv) == 4:
        with open(sys.argv[2], "rb") as cert, open(sys.argv[3], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.stop(grace=1).wait()
    out.close()
    metrics_out.close()


if __name__ == "__main__":
    main()
