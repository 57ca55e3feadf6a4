"""Outgoing transports against servers that answer wrongly or slowly, on loopback.

Matrix: a homeserver that logs the bot in and makes rooms, then answers the message
itself badly. Push: servers that keep every send until its deadline, many at once.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from core.test_outbox import add_notification, add_user, state_of
from hostile_http import HostileServer, hostile_server, json_reply, matrix_homeserver, reply

from fmn_core.config import DeliveryConfig, MatrixConfig, PushConfig
from fmn_core.db import Database
from fmn_core.rendering import Rendered
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports import TransportError
from fmn_daemon.transports.matrix import MatrixClient, MatrixTransport, _Answer
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS, PushTransport

BOT = "@fmn:localhost"
ALICE = "@alice:localhost"
LINE = Rendered(subject="[bodhi] an update", text="an update", short="an update", url=None)

#: How a fake homeserver answers the message itself (``PUT …/send/…``).
SendAnswer = Callable[[socket.socket], None]


def homeserver(send: SendAnswer) -> Callable[[socket.socket, bytes], None]:
    """A homeserver that logs the bot in and makes a room as Synapse would, and
    answers the message with ``send``."""
    return matrix_homeserver(BOT, send)


def bot_config(server: HostileServer, **values: Any) -> MatrixConfig:
    return MatrixConfig(homeserver_url=server.url, user_id=BOT, password="hunter2", **values)


def _empty_object(conn: socket.socket) -> None:
    json_reply(conn, {})


def _html_page(conn: socket.socket) -> None:
    reply(conn, 200, b"<html><body>Welcome</body></html>", "Content-Type: text/html")


def _event_id_not_a_string(conn: socket.socket) -> None:
    json_reply(conn, {"event_id": 12})


@pytest.mark.parametrize(
    "send",
    [_empty_object, _html_page, _event_id_not_a_string],
    ids=["empty-object", "html", "number"],
)
def test_transport_matrix_a_200_without_an_event_id_is_not_taken_as_sent(
    db: Database, send: SendAnswer
) -> None:
    """Only an event ID says the message is in the room: a 200 without one (an empty
    object, a proxy's HTML page) fails the row with that reason, retried as any
    homeserver error is."""
    with db.begin() as session:
        user = add_user(session, "alice", "matrix", (ALICE,))
        row_id = add_notification(session, user, "matrix").id
    with hostile_server(homeserver(send)) as server:
        matrix = bot_config(server, timeout_seconds=5)
        config = db.config.replace(
            matrix=matrix,
            delivery=DeliveryConfig(senders=1, max_attempts=5, backoff_seconds=60),
        )
        senders = Senders(db, config, Metrics(), transports={"matrix": MatrixTransport(matrix)})
        asyncio.run(senders.drain(30))
        assert sum("/send/m.room.message/" in line for line in server.request_lines()) == 1
    row = state_of(db, row_id)
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "without an event ID" in row.last_error
    assert ALICE not in row.last_error and "hunter2" not in row.last_error


def _drip(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
    for _ in range(300):
        conn.sendall(b" ")
        time.sleep(0.1)


def test_transport_matrix_a_homeserver_that_drips_its_answer_is_named_too_slow() -> None:
    """Not "cannot be reached" with nothing after it: which request, and the setting."""
    with hostile_server(homeserver(_drip)) as server:
        client = MatrixClient(bot_config(server, timeout_seconds=2))
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            asyncio.run(client.send_text(ALICE, "hello"))
        took = time.monotonic() - started
    assert took < 2 + 3
    assert caught.value.reason == (
        f"the Matrix homeserver {server.url} did not answer /rooms/…/send/m.room.message/… "
        "within 2 s (matrix.timeout_seconds)"
    )


def test_transport_matrix_an_error_without_text_reads_as_its_code_alone() -> None:
    assert _Answer(429, {"errcode": "M_LIMIT_EXCEEDED"}).reason() == "HTTP 429 M_LIMIT_EXCEEDED"
    assert _Answer(502, {}).reason() == "HTTP 502"
    assert _Answer(403, {"error": "go away"}).reason() == "HTTP 403 go away"


def test_transport_push_slow_servers_leave_the_daemons_shared_threads_free() -> None:
    """As many sends as there are send slots (16), each kept by its server until its
    deadline: the event loop's shared threads (claims, outcome commits, web requests)
    stay free, and every send ends by its own deadline, none waiting for a thread."""
    push = PushConfig(allow_private_hosts=True, timeout_seconds=1)
    deadline = push.timeout_seconds * SEND_DEADLINE_TIMEOUTS

    async def scenario(url: str) -> tuple[float, list[float]]:
        transport = PushTransport(push, threads=16)

        async def send() -> float:
            started = time.monotonic()
            with pytest.raises(TransportError):
                await transport.send(url, LINE)
            return time.monotonic() - started

        sends = [asyncio.create_task(send()) for _ in range(16)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)  # what a claim or a commit does
        shared = time.monotonic() - started
        took = await asyncio.gather(*sends)
        transport.close()
        return shared, took

    with hostile_server(lambda conn, request: _drip(conn)) as server:
        shared, took = asyncio.run(scenario(f"{server.url.replace('http://', 'ntfy://')}/t"))
    assert shared < 0.5, f"a worker thread of the loop was free only after {shared:.1f}s"
    assert max(took) < deadline + 1.5, f"the slowest send took {max(took):.1f}s"
