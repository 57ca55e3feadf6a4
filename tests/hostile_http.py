"""A raw-socket HTTP server on loopback that answers however a test says.

``http.server`` can't misbehave on purpose: it always sends a whole, well-formed
answer. This server reads each request (its head and a ``Content-Length`` body),
records it, and hands the socket to the test's ``answer(conn, request)``, which may
send a body cut short, drip it a byte at a time, stall, or redirect elsewhere
(``head`` and ``reply`` write the usual parts). It
runs in a thread on a free port, is ready once ``hostile_server`` yields, and is
stopped in ``finally``: open connections are shut down, so an answer still dripping
ends at its next send.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

#: Answers one request on its connection: ``answer(conn, request_bytes)``.
Answer = Callable[[socket.socket, bytes], None]


@dataclass
class HostileServer:
    """Where the server listens, and every request it has read (head and body)."""

    url: str
    requests: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: list[socket.socket] = field(default_factory=list)

    def request_lines(self) -> list[str]:
        """The first line of each request read (``POST /path HTTP/1.1``)."""
        with self.lock:
            return [r.split(b"\r\n", 1)[0].decode("latin-1") for r in self.requests]


def head(status: int, *headers: str) -> bytes:
    """An answer's status line and ``headers``; ``Connection: close``, as the server
    answers one request per connection (a client reusing it would race the close)."""
    return "\r\n".join([f"HTTP/1.1 {status} X", "Connection: close", *headers, "", ""]).encode()


def reply(conn: socket.socket, status: int, body: bytes, *headers: str) -> None:
    """A whole answer: ``status``, ``Content-Length`` and ``headers``, then ``body``."""
    conn.sendall(head(status, f"Content-Length: {len(body)}", *headers) + body)


def json_reply(conn: socket.socket, value: object, status: int = 200) -> None:
    """Answer with ``value`` as JSON."""
    reply(conn, status, json.dumps(value).encode(), "Content-Type: application/json")


def matrix_homeserver(
    bot: str, send: Callable[[socket.socket], None] | None = None
) -> Callable[[socket.socket, bytes], None]:
    """A homeserver's answers as Synapse gives them to ``bot``: a login, no ``m.direct``
    yet, a new room; the message itself answered by ``send`` (an event ID by default)."""

    def answer(conn: socket.socket, request: bytes) -> None:
        line = request.split(b"\r\n", 1)[0].decode()
        if "/login " in line:
            json_reply(conn, {"access_token": "t0k", "user_id": bot, "device_id": "DEV"})
        elif "/account_data/m.direct " in line:
            if line.startswith("PUT"):
                json_reply(conn, {})
            else:
                json_reply(conn, {"errcode": "M_NOT_FOUND", "error": "no data"}, 404)
        elif "/createRoom " in line:
            json_reply(conn, {"room_id": "!dm:localhost"})
        elif "/send/m.room.message/" in line:
            if send is None:
                json_reply(conn, {"event_id": "$e"})
            else:
                send(conn)
        else:
            json_reply(conn, {"errcode": "M_UNRECOGNIZED"}, 404)

    return answer


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def hostile_server(answer: Answer) -> Iterator[HostileServer]:
    """Run a server whose every request is answered by ``answer``; stop it on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = HostileServer(url=f"http://127.0.0.1:{listener.getsockname()[1]}")
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        # Every error ends only this connection (the client hung up, or the test ended).
        with conn, suppress(OSError):
            conn.settimeout(10)
            request = _read_request(conn)
            if request is None:
                return
            with server.lock:
                server.requests.append(request)
            conn.settimeout(None)
            answer(conn, request)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            with server.lock:
                server.connections.append(conn)
            thread = threading.Thread(target=serve, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, name="hostile-http", daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        # shutdown() wakes accept() and any blocked send or recv; close() alone may not.
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(timeout=5)
        with server.lock:
            for conn in server.connections:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
