"""An OTLP/HTTP trace receiver for the tracing tests.

Decodes each `POST /v1/traces` body with the official OpenTelemetry protocol
definitions (PyPI `opentelemetry-proto`: ExportTraceServiceRequest, protobuf
encoding, gzip when the request says so) and appends every span to a JSON
Lines file: trace and span ids in hex, parent span id, name, kind, start and
end times, attributes, links, status, and the resource's service name.

    receiver.py --port 4318 --out spans.jsonl
    receiver.py --port 4318 --discard      # answer only (benchmarks)
"""

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

LOCK = threading.Lock()


def any_value(v):
    d = MessageToDict(v)
    if not d:
        return None
    (kind, value), = d.items()
    if kind == "intValue":
        return int(value)
    return value


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def spans(req):
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "service": resource.get("service.name"),
                    "scope": ss.scope.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": Span.SpanKind.Name(s.kind),
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "attributes": attributes(s.attributes),
                    "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()} for l in s.links],
                    "status": s.status.code,
                }


def handler(out):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if out is None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            try:
                req = ExportTraceServiceRequest.FromString(body)
            except Exception as e:  # noqa: BLE001 - answer what cannot be decoded
                self.send_error(400, str(e))
                return
            with LOCK, open(out, "a") as f:
                for s in spans(req):
                    f.write(json.dumps(s) + "\n")
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def do_GET(self):
            ok = self.path == "/ready"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out")
    p.add_argument("--discard", action="store_true", help="answer without decoding or keeping anything")
    a = p.parse_args()
    if not a.discard:
        open(a.out, "a").close()
    ThreadingHTTPServer(("127.0.0.1", a.port), handler(None if a.discard else a.out)).serve_forever()


if __name__ == "__main__":
    main()
