"""Fixtures for the core tests: the corpus read once, and a real local HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import database_at as database_at  # tests/conftest.py, for the core tests' imports
from fasjson_server import FasjsonServer, running_fasjson

from fmn_core.db import Database
from fmn_core.errors import MalformedMessage
from fmn_core.messages import MessageFacts, facts_of, parse_line


@pytest.fixture(scope="session")
def corpus_facts(corpus: list[str]) -> list[MessageFacts]:
    """The facts of every corpus line that parses (test_messages checks the others)."""
    facts = []
    for line in corpus:
        try:
            facts.append(facts_of(parse_line(line)))
        except MalformedMessage:
            continue
    return facts


@dataclass
class Exchange:
    """One request the test server received."""

    method: str
    path: str
    body: bytes


#: A route answers (status, content type, body) for an exchange.
Route = Callable[[Exchange], tuple[int, str, bytes]]


@dataclass
class LocalServer:
    """A threaded HTTP server on 127.0.0.1; tests set ``routes`` by path."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    received: list[Exchange] = field(default_factory=list)


def _handler_for(state: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            exchange = Exchange(self.command, self.path.split("?", 1)[0], self.rfile.read(length))
            state.received.append(exchange)
            route = state.routes.get(exchange.path)
            status, content_type, body = (
                route(exchange) if route else (404, "text/plain", b"no such page")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return  # keep pytest's output clean

    return Handler


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A real HTTP server in a thread on a free loopback port, stopped in ``finally``."""
    state = LocalServer(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    port = int(server.server_address[1])
    state.url = f"http://127.0.0.1:{port}"
    # A short poll interval: shutdown() waits for the loop to notice.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True
    )
    thread.start()
    try:
        # Wait until the server accepts connections before handing it out.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fasjson() -> Iterator[FasjsonServer]:
    """A FASJSON-compatible server on loopback (tests/fasjson_server.py)."""
    with running_fasjson() as server:
        yield server


def waiting_for_a_lock(db: Database) -> bool:
    """Whether some other connection of this PostgreSQL database waits for a lock."""
    with db.engine.connect() as connection:
        return bool(
            connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).scalar()
        )


def while_held(
    db: Database,
    first: Callable[[Any], Any],
    second: Callable[[Any], Any],
    *,
    first_is_a_person: bool = True,
) -> tuple[Any, Any]:
    """Run ``first`` in a unit, then ``second`` in another thread's unit (a person's)
    while the first is still open; commit the first once the second waits for it or
    is done. Returns each one's result, or the exception the second raised.
    ``first_is_a_person=False``: the first unit is the daemon's (housekeeping)."""
    outcome: list[Any] = [None]

    def run_second() -> None:
        try:
            with db.person_waiting(busy_timeout=10) as session:
                outcome[0] = second(session)
        except Exception as exc:
            outcome[0] = exc

    thread = threading.Thread(target=run_second)
    unit = db.person_waiting() if first_is_a_person else db.begin()
    with unit as session:
        first_result = first(session)
        session.flush()
        thread.start()
        deadline = time.monotonic() + 5
        while thread.is_alive() and time.monotonic() < deadline:
            if db.engine.dialect.name != "postgresql":
                time.sleep(0.2)  # BEGIN IMMEDIATE: the second waits for the write lock
                break
            if waiting_for_a_lock(db):
                break
            time.sleep(0.02)
    thread.join(timeout=15)
    assert not thread.is_alive()
    return first_result, outcome[0]
