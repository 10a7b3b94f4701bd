"""A service that calls another one and passes the trace headers on, as Istio asks of apps.

``GET /chain`` calls ``http://$NEXT/`` through the pod's HTTP CONNECT proxy
(``HTTPS_PROXY``, set by the local runtime), copying ``traceparent``,
``tracestate``, the B3 headers and ``x-request-id`` from the request it got, and
answers JSON: the headers it received and the next service's answer.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PROPAGATED = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
              "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id")  # fmt: skip


def call_next(headers: dict[str, str]) -> object:
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    host, port = os.environ["NEXT"].rsplit(":", 1)
    conn = http.client.HTTPConnection(proxy.hostname or "", proxy.port or 15081, timeout=10)
    conn.set_tunnel(host, int(port))
    try:
        conn.request("GET", "/", headers={"host": os.environ["NEXT"], **headers})
        response = conn.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else {"status": response.status}
    finally:
        conn.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        received = {k.lower(): v for k, v in self.headers.items()}
        passed = {k: v for k, v in received.items() if k in PROPAGATED}
        answer = {"received": received, "next": call_next(passed)}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(format % args + "\n")


def main() -> None:
    server = ThreadingHTTPServer((os.environ.get("POD_IP", "127.0.0.1"), int(sys.argv[1])), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
