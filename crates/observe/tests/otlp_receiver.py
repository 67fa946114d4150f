"""A minimal OTLP/HTTP trace receiver for keel-observe's tests.

Decodes each POST /v1/traces body (application/x-protobuf) with the official OpenTelemetry
proto definitions (PyPI `opentelemetry-proto`), appends one JSON line per span to OUT_FILE, and
answers with an ExportTraceServiceResponse. Each request's path and headers go to
OUT_FILE.requests.jsonl (to check what the exporter sends, at whatever path). Prints the port it listens on (127.0.0.1, chosen
by the OS) as its first stdout line. Exits when stdin closes (the test dropped it).
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

OUT = sys.argv[1]
lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock, open(OUT + ".requests.jsonl", "a") as f:
            headers = {k.lower(): v for k, v in self.headers.items()}
            f.write(json.dumps({"path": self.path, "headers": headers}) + "\n")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(415)
            self.end_headers()
            return
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        rows = []
        for rs in req.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append({
                        "resource": resource,
                        "scope": ss.scope.name,
                        "schema_url": ss.schema_url,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "status_code": s.status.code,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                    })
        with lock, open(OUT, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        resp = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(resp)))
        self.end_headers()
        self.wfile.write(resp)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
