"""A small HTTP app for the shop example: says who it is and who called it.

    python3 app.py --name orders --version v1 [--port 8080]

Listens on $POD_IP (or 127.0.0.1). Every answer is JSON with the app's name,
version and pod, the caller's address, and the caller's SPIFFE identity when
ztunnel passed it on (pods annotated ``ambient.io/application-tunnel: PROXY``
get a PROXY protocol v2 header whose TLV 0xD0 carries the identity ztunnel
verified), and the request headers it received (lower-case names; repeated
headers joined with ``,``), so what a waypoint added or removed is visible.
``/api/health`` answers ``{"status": "ok"}``. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def read_proxy_header(sock: socket.socket) -> tuple[str | None, str | None]:
    """Consume a PROXY v2 header if one is there; returns (source address, identity)."""
    start = sock.recv(16, socket.MSG_PEEK)
    if not start.startswith(SIGNATURE[: len(start)]) or len(start) < 16:
        return None, None
    length = int.from_bytes(start[14:16], "big")
    data = b""
    while len(data) < 16 + length:
        chunk = sock.recv(16 + length - len(data))
        if not chunk:
            return None, None
        data += chunk
    family, body = data[13], data[16:]
    source = None
    if family == 0x11:
        source = (
            f"{socket.inet_ntop(socket.AF_INET, body[0:4])}:{int.from_bytes(body[8:10], 'big')}"
        )
        body = body[12:]
    elif family == 0x21:
        source = f"[{socket.inet_ntop(socket.AF_INET6, body[0:16])}]:{int.from_bytes(body[32:34], 'big')}"
        body = body[36:]
    identity = None
    while len(body) >= 3:
        kind, size = body[0], int.from_bytes(body[1:3], "big")
        if kind == 0xD0:
            identity = body[3 : 3 + size].decode()
        body = body[3 + size :]
    return source, identity


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections (a waypoint
    # opening many upstream connections at once) overflowed it, dropped handshakes and
    # failed requests after a 1 s SYN retransmit.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], name: str, version: str) -> None:
        super().__init__(address, Handler)
        self.name, self.version = name, version


class Handler(BaseHTTPRequestHandler):
    server: Server
    proxied_source: str | None = None
    peer_identity: str | None = None
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        # Before the buffered reader exists: take the PROXY header off the socket first.
        self.proxied_source, self.peer_identity = read_proxy_header(self.request)
        super().setup()

    def do_GET(self) -> None:
        if self.path.startswith("/api/health"):
            self.reply(
                200, {"status": "ok", "app": self.server.name, "version": self.server.version}
            )
            return
        self.reply(
            200,
            {
                "app": self.server.name,
                "version": self.server.version,
                "pod": os.environ.get("POD_NAME", "?"),
                "namespace": os.environ.get("POD_NAMESPACE", "?"),
                "path": self.path,
                "peer": self.proxied_source or f"{self.client_address[0]}:{self.client_address[1]}",
                "peer_identity": self.peer_identity,
                "headers": self.received_headers(),
            },
        )

    do_POST = do_GET

    def received_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            out[key] = f"{out[key]},{value}" if key in out else value
        return out

    def reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    host = os.environ.get("POD_IP", "127.0.0.1")
    server = Server((host, args.port), args.name, args.version)
    print(f"{args.name} {args.version} listening on {host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
