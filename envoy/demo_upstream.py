#!/usr/bin/env python3
"""A tiny demo upstream: answers every request with a JSON echo of what it received.

Used by `make run`, the end-to-end tests and docker-compose. Standard library only.
"""
import argparse
import http.client
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Envoy decides which requests are too large; the demo upstream accepts whatever it forwards.
http.client._MAXLINE = 1 << 20
http.client._MAXHEADERS = 100_000


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out as two writes: with Nagle's algorithm on, the body waits
    # for Envoy's delayed ACK (~40 ms) on every reused connection.
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"ok": True, "method": self.command, "path": self.path, "upstream": "demo"}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    # The default accept backlog (5) drops connections when Envoy opens many at once under load,
    # which Envoy reports as 503 (upstream connect timeout).
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer((args.host, args.port), Echo)
    server.daemon_threads = True
    print(f"demo upstream on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
