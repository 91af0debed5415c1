#!/usr/bin/env python3
"""A stand-in application for the demo: answers every request with 200 and the request's
headers as JSON, so you can see the identity headers certgate added."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps(
            {"method": self.command, "path": self.path,
             "headers": {k.lower(): v for k, v in self.headers.items()}},
            indent=2, sort_keys=True).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
