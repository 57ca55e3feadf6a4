"""A loopback stand-in for FASJSON: ``GET /v1/users/<name>/`` for a list of users.

FMN 3 asks FASJSON whether each rule's owner still exists (``Consumer._user_disabled``).
This answers 200 for the names in the JSON list given as the first argument and
404 for anyone else, on 127.0.0.1 and a free port, which it prints as its first
line. It runs as its own process so that it doesn't compete with the consumer
for the GIL. It stops when its standard input closes.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(usernames: set[str]) -> ThreadingHTTPServer:
    """Start the server in a thread; returns it (``server_address[1]`` is the port)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many lookups
        disable_nagle_algorithm = True  # else each answer waits for a delayed ACK

        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 3 and parts[:2] == ["v1", "users"] and parts[2] in usernames:
                body = json.dumps({"result": {"username": parts[2]}}).encode()
                self.send_response(200)
            else:
                body = json.dumps({"name": "Not Found"}).encode()
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as names:
        server = serve(set(json.load(names)))
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
