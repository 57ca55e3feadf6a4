"""The HTTP surface under hostile clients: real server on loopback, real sockets.

Each test is named after a case issue 10 found or asked for: idle and slowloris
connections, connection caps (in all and per client address), live-client caps,
junk ``since`` values, control characters in feeds, the RFC 8058 body, and the
memory a catch-up costs.
"""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import datetime as dt
import logging
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
from core.test_outbox import add_message, add_notification, add_user
from sqlalchemy import event, select

from daemon.test_http import email_enabled, http_config, run, serving, sqlite_database
from fmn_core.config import Config, HttpConfig
from fmn_core.db import Database
from fmn_core.models import Message, User, utcnow
from fmn_core.rendering import Links
from fmn_daemon.limits import DESCRIPTOR_RESERVE, AcceptErrorLog, RateLimitedLog, connection_cap
from fmn_daemon.transports.live import LiveHub

FEED = "feed-token-jo-aaaaaaaaaaaaaaaa"
LIVE = "live-token-jo-aaaaaaaaaaaaaaaa"
AL_LIVE = "live-token-al-bbbbbbbbbbbbbbbb"
ED_LIVE = "live-token-ed-cccccccccccccccc"


@pytest.fixture
def surface_db(tmp_path: Path) -> Database:
    db = sqlite_database(tmp_path)
    with db.begin() as session:
        add_user(session, "jo", "rss", (FEED,))
        add_user(session, "jo", "live", (LIVE,))
        add_user(session, "al", "live", (AL_LIVE,))
        add_user(session, "ed", "live", (ED_LIVE,))
    return db


def limited(db: Database, **limits: Any) -> Config:
    """``http_config`` with some ``[http]`` limits changed."""
    config = http_config(db)
    return config.replace(http=dataclasses.replace(config.http, **limits))


async def raw_connection(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the server from a chosen loopback address."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Read until the server closes the connection; what it sent. Fails after ``within``."""
    received = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(4096):
                received += chunk
    except ConnectionResetError:
        pass
    return received


async def status_of(port: int, path: str, source: str = "127.0.0.1") -> int:
    """The status line's code of one ``GET`` sent by hand."""
    reader, writer = await raw_connection(port, source)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        return int(line.split()[1])
    finally:
        writer.close()


# -- connections ----------------------------------------------------------------------


def test_http_idle_connection_closed_after_header_timeout(surface_db: Database) -> None:
    config = limited(surface_db, header_timeout_seconds=1.0)

    async def scenario() -> tuple[float, bytes]:
        async with serving(config, surface_db):
            reader, writer = await raw_connection(config.http.port)
            started = time.monotonic()
            received = await closed_by_server(reader, within=5)
            writer.close()
            return time.monotonic() - started, received

    elapsed, received = run(scenario)
    assert 0.8 <= elapsed < 3.0
    assert received == b""


def test_http_slowloris_headers_closed_after_the_timeout(surface_db: Database) -> None:
    config = limited(surface_db, header_timeout_seconds=1.5)

    async def scenario() -> tuple[float, int, int]:
        async with serving(config, surface_db):
            reader, writer = await raw_connection(config.http.port)
            writer.write(b"GET /live HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            closed = asyncio.create_task(closed_by_server(reader, within=8))
            sent = 0
            # One header line every 0.2 s, never the blank line that ends the head.
            while not closed.done():
                try:
                    writer.write(f"X-Slow-{sent}: drip\r\n".encode())
                    await writer.drain()
                except ConnectionError:
                    break
                sent += 1
                await asyncio.sleep(0.2)
            received = await closed
            elapsed = time.monotonic() - started
            writer.close()
            assert received == b""
            # The server still answers others at once.
            status = await status_of(config.http.port, "/ready")
            return elapsed, sent, status

    elapsed, sent, status = run(scenario)
    assert elapsed < 4.0, "the slow head was not cut off"
    assert sent >= 5
    assert status == 503  # /ready answers (not ready: no main loop in this test)


def test_http_keepalive_connection_closed_when_idle(surface_db: Database) -> None:
    config = limited(surface_db, keepalive_timeout_seconds=1.0, header_timeout_seconds=30.0)

    async def scenario() -> tuple[bytes, float]:
        async with serving(config, surface_db):
            reader, writer = await raw_connection(config.http.port)
            writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            started = time.monotonic()
            await closed_by_server(reader, within=6)
            writer.close()
            return head, time.monotonic() - started

    head, idle = run(scenario)
    assert head.startswith(b"HTTP/1.1 503")  # not ready: the request itself was answered
    assert idle < 4.0


def test_http_connection_cap_global_and_per_ip(surface_db: Database) -> None:
    config = limited(surface_db, max_connections=12, max_connections_per_ip=4)

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with serving(config, surface_db) as (base, client):
            port = config.http.port
            held = [await raw_connection(port, "127.0.0.2") for _ in range(4)]
            await asyncio.sleep(0.1)
            # A fifth from the same address is answered 503 and closed.
            reader, writer = await raw_connection(port, "127.0.0.2")
            found["fifth_same_ip"] = await closed_by_server(reader, within=5)
            writer.close()
            # Another address is still served.
            found["other_ip"] = await status_of(port, "/ready", "127.0.0.3")
            # Fill the server from more addresses: 4 + 2 * 4 = 12 connections.
            for source in ("127.0.0.4", "127.0.0.5"):
                held += [await raw_connection(port, source) for _ in range(4)]
            await asyncio.sleep(0.1)
            reader, writer = await raw_connection(port, "127.0.0.1")
            found["over_global"] = await closed_by_server(reader, within=5)
            writer.close()
            for _, held_writer in held:
                held_writer.close()
            await asyncio.sleep(0.3)
            found["after_release"] = await status_of(port, "/ready")
            async with client.get(f"{base}/metrics") as response:
                found["metrics"] = await response.text()
        return found

    found = run(scenario)
    assert found["fifth_same_ip"].startswith(b"HTTP/1.1 503 ")
    assert b"too many connections" in found["fifth_same_ip"]
    assert found["other_ip"] == 503  # /ready: served (not ready), not refused
    assert found["over_global"].startswith(b"HTTP/1.1 503 ")
    assert found["after_release"] == 503
    lines = found["metrics"].splitlines()
    refused = next(line for line in lines if line.startswith("fmn_http_connections_refused_total"))
    assert int(refused.split()[1]) == 2


def test_http_connection_cap_stays_below_the_descriptor_limit() -> None:
    assert connection_cap(1024, soft_limit=8192) == 1024
    assert connection_cap(1024, soft_limit=1024) == 1024 - DESCRIPTOR_RESERVE
    assert connection_cap(1024, soft_limit=300) == 150
    assert connection_cap(5, soft_limit=1024) == 5


def test_systemd_unit_limits_descriptors_well_above_the_connection_cap() -> None:
    unit = files("fmn_daemon") / "fmn-daemon.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    limit = int(parser["Service"]["LimitNOFILE"])
    assert limit >= HttpConfig().max_connections + 4 * DESCRIPTOR_RESERVE
    assert connection_cap(HttpConfig().max_connections, soft_limit=limit) == (
        HttpConfig().max_connections
    )


def test_http_accept_errors_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    clock = [0.0]
    handler = AcceptErrorLog(60.0)
    handler.errors = RateLimitedLog(60.0, clock=lambda: clock[0])
    loop = asyncio.new_event_loop()
    try:
        failure = OSError(errno.EMFILE, "Too many open files")
        context = {"message": "socket.accept() out of system resource", "exception": failure}
        for second in range(120):
            clock[0] = float(second)
            handler(loop, context)
    finally:
        loop.close()
    lines = [r for r in caplog.records if "accepting a connection failed" in r.getMessage()]
    assert len(lines) == 2
    assert all(r.exc_info is None for r in lines)
    assert "59 more since the last such line, 61 in all" in lines[1].getMessage()


CLIENT = """
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
print("connected", flush=True)
time.sleep(float(sys.argv[2]))
held[0].sendall(b"GET /ready HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
print(held[0].recv(100).split(b"\\r\\n")[0].decode(), flush=True)
"""


@pytest.mark.slow
def test_http_accept_out_of_descriptors_logged_once_not_a_traceback(
    surface_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A real EMFILE on accept: one warning with a count, then service resumes."""
    import os
    import resource
    import subprocess
    import sys

    config = limited(surface_db, accept_error_log_seconds=60.0)

    async def scenario() -> tuple[str, int]:
        async with serving(config, surface_db):
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENT,
                str(config.http.port),
                "3.5",
                stdout=subprocess.PIPE,
            )
            assert client.stdout is not None
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            fillers: list[int] = []
            # Take every descriptor this process may open, so the server's accept()
            # fails with EMFILE, as it did for the unit without LimitNOFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
            try:
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            try:
                await asyncio.sleep(3.0)  # asyncio retries accept() once a second
            finally:
                for descriptor in fillers:
                    os.close(descriptor)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            output = await asyncio.wait_for(client.stdout.read(), 20)
            await client.wait()
            return output.decode(), len(fillers)

    with caplog.at_level(logging.WARNING):
        output, filled = run(scenario)
    assert filled > 0
    assert "connected" in output and "HTTP/1.1 503" in output  # /ready answered afterwards
    lines = [r for r in caplog.records if "accepting a connection failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    assert "Too many open files" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info is not None]


# -- live clients ---------------------------------------------------------------------


def test_live_client_caps_global_and_per_token(surface_db: Database) -> None:
    config = limited(surface_db, max_live_clients=3, max_live_clients_per_token=2)

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with serving(config, surface_db) as (base, client):
            jo_1 = await client.get(f"{base}/live/sse/{LIVE}")
            jo_2 = await client.ws_connect(f"{base}/live/ws/{LIVE}")
            async with client.get(f"{base}/live/sse/{LIVE}") as third:
                found["jo_third"] = (third.status, await third.text())
            al = await client.get(f"{base}/live/sse/{AL_LIVE}")
            async with client.get(f"{base}/live/sse/{ED_LIVE}") as full:
                found["ed_when_full"] = (full.status, await full.text())
            await jo_2.close()
            await asyncio.sleep(0.2)
            again = await client.get(f"{base}/live/sse/{ED_LIVE}")
            found["ed_after_one_left"] = again.status
            for response in (jo_1, al, again):
                response.close()
        return found

    found = run(scenario)
    assert found["jo_third"][0] == 429
    assert "already has 2 clients" in found["jo_third"][1]
    assert found["ed_when_full"][0] == 503
    assert "too many live clients" in found["ed_when_full"][1]
    assert found["ed_after_one_left"] == 200


def test_live_client_that_stops_reading_is_dropped_and_its_seat_freed(
    surface_db: Database,
) -> None:
    config = limited(surface_db, send_timeout_seconds=1.0, max_live_clients_per_token=1)
    hub = LiveHub(queue_size=10_000)

    async def scenario() -> tuple[float, int, int]:
        import socket as socket_module

        async with serving(config, surface_db, live=hub) as (base, client):
            raw = socket_module.socket()
            # A tiny receive window, and never a read: the server's writes back up.
            raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
            raw.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(raw, ("127.0.0.1", config.http.port))
            await loop.sock_sendall(
                raw, f"GET /live/sse/{LIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            for _ in range(200):
                if hub.subscribers(LIVE):
                    break
                await asyncio.sleep(0.01)
            started = time.monotonic()
            event = {"id": 0, "summary": "x" * 500, "topic": "t", "filter": "f"}
            sent = 0
            while hub.subscribers(LIVE) and time.monotonic() - started < 20:
                # New ids each time: a stream sends an id once.
                hub.publish(LIVE, [dict(event, id=sent + n) for n in range(200)])
                sent += 200
                await asyncio.sleep(0.02)
            dropped_after = time.monotonic() - started
            raw.close()
            # The seat is free again: the same token connects.
            async with client.get(f"{base}/live/sse/{LIVE}") as again:
                status = again.status
            return dropped_after, hub.subscribers(LIVE), status

    dropped_after, left, status = run(scenario)
    assert dropped_after < 15, "a client that stopped reading was never dropped"
    assert left == 0
    assert status == 200


JUNK_SINCE = [
    "²",
    "1" * 5000,
    "-1",
    "+1",
    " 1",
    "1 ",
    "",
    "0x10",
    "1.0",
    "١٢",  # Arabic-Indic digits: str.isdigit() says yes, a notification id says no
    str(2**63),
    "1e3",
]


def test_live_since_junk_is_400(surface_db: Database) -> None:
    config = http_config(surface_db)

    async def scenario() -> list[tuple[str, int, str]]:
        seen = []
        async with serving(config, surface_db) as (base, client):
            for value in JUNK_SINCE:
                for kind in ("ws", "sse"):
                    async with client.get(
                        f"{base}/live/{kind}/{LIVE}", params={"since": value}
                    ) as response:
                        seen.append(
                            (f"{kind} since={value[:10]!r}", response.status, await response.text())
                        )
                if value.strip() != value:
                    continue  # HTTP itself strips white space around a header's value
                async with client.get(
                    f"{base}/live/sse/{LIVE}", headers={"Last-Event-ID": value}
                ) as response:
                    seen.append(
                        (f"Last-Event-ID={value[:10]!r}", response.status, await response.text())
                    )
            # A good since still works.
            async with client.ws_connect(f"{base}/live/ws/{LIVE}?since=0") as socket:
                await socket.close()
        return seen

    seen = run(scenario)
    assert len(seen) == 3 * len(JUNK_SINCE) - 2
    for name, status, text in seen:
        assert status == 400, (name, status, text)
        assert "since" in text or "Last-Event-ID" in text, (name, text)
        assert "Traceback" not in text


# -- feeds ----------------------------------------------------------------------------

HOSTILE_TOPIC = "org.fedoraproject.prod.bodhi\x1b[31m.update\x07.comment\x01"


def test_feed_topic_with_control_characters_is_valid_xml(surface_db: Database) -> None:
    now = utcnow()
    with surface_db.begin() as session:
        jo = session.scalars(select(User).where(User.name == "jo")).one()
        hostile = add_message(
            session,
            {"topic": HOSTILE_TOPIC, "body": {"summary": "x"}, "headers": {}},
        )
        # A row written by something other than ingest, display columns raw.
        raw = Message(
            id=str(uuid.uuid4()),
            topic=HOSTILE_TOPIC,
            body={},
            headers={},
            summary="bell\x07 esc\x1b nul\x00 \ufffe end",
            url="javascript:alert(1)",
            app="b\x01odhi",
        )
        # A row stored before the display columns existed.
        legacy = Message(id=str(uuid.uuid4()), topic=HOSTILE_TOPIC, body={}, headers={})
        session.add_all([raw, legacy])
        session.flush()
        for minutes, message in enumerate((hostile, raw, legacy)):
            add_notification(
                session,
                jo,
                "rss",
                message,
                state="sent",
                sent_at=now - dt.timedelta(minutes=minutes),
                filter_name="f\x1bilter",
            )
        add_notification(session, jo, "rss", state="sent", sent_at=now - dt.timedelta(hours=1))
    config = http_config(surface_db)

    async def scenario() -> list[tuple[int, bytes]]:
        out = []
        async with serving(config, surface_db) as (base, client):
            for suffix in ("atom", "rss"):
                async with client.get(f"{base}/feeds/{FEED}.{suffix}") as response:
                    out.append((response.status, await response.read()))
        return out

    for status, body in run(scenario):
        assert status == 200
        parsed = feedparser.parse(body)
        assert not parsed.bozo, parsed.bozo_exception
        assert len(parsed.entries) == 4
        for control in ("\x1b", "\x07", "\x01", "\x00", "\ufffe"):
            assert control not in body.decode("utf-8")
        assert all("javascript:" not in e.get("link", "") for e in parsed.entries)
        assert any("bodhi" in e.title for e in parsed.entries)


# -- one-click unsubscribe ------------------------------------------------------------


def test_unsubscribe_post_without_one_click_body_refused(surface_db: Database) -> None:
    config = http_config(surface_db)
    token = Links.from_config(config).unsubscribe_token("jo", "email")

    async def scenario() -> list[int]:
        statuses = []
        async with serving(config, surface_db) as (base, client):
            for data in (None, "", "List-Unsubscribe=Yes", "one-click", b"\xff\xfe"):
                async with client.post(
                    f"{base}/unsubscribe/{token}",
                    data=data,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ) as response:
                    statuses.append(response.status)
                    assert "List-Unsubscribe=One-Click" in await response.text()
            assert email_enabled(surface_db, "jo")
            # What some mail clients send: multipart/form-data, as RFC 8058 allows.
            with aiohttp.MultipartWriter("form-data") as form:
                form.append("One-Click").set_content_disposition(
                    "form-data", name="List-Unsubscribe"
                )
            async with client.post(f"{base}/unsubscribe/{token}", data=form) as response:
                statuses.append(response.status)
        return statuses

    with surface_db.begin() as session:
        add_user(session, "jo", "email", ("jo@example.org",))
    assert run(scenario) == [400] * 5 + [200]
    assert not email_enabled(surface_db, "jo")


# -- memory of catch-ups --------------------------------------------------------------

BIG_MESSAGES = 6
BIG_BYTES = 4 * 1024 * 1024


@pytest.fixture
def statements(surface_db: Database) -> Iterator[list[str]]:
    """Every SQL statement the database runs while the test runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(surface_db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(surface_db.engine, "before_cursor_execute", record)


@pytest.mark.slow
def test_live_and_feed_catchups_memory_bounded(surface_db: Database, statements: list[str]) -> None:
    now = utcnow()
    with surface_db.begin() as session:
        jo = session.scalars(select(User).where(User.name == "jo")).one()
        for n in range(BIG_MESSAGES):
            body = {"summary": "big", "payload": "x" * BIG_BYTES, "n": n}
            message = add_message(
                session, {"topic": "org.fedoraproject.prod.big.x", "body": body, "headers": {}}
            )
            for context in ("live", "rss"):
                add_notification(
                    session,
                    jo,
                    context,
                    message,
                    state="sent",
                    sent_at=now - dt.timedelta(seconds=60 - n),
                )
    config = http_config(surface_db)
    statements.clear()

    async def scenario() -> tuple[list[int], int]:
        async with serving(config, surface_db) as (base, client):

            async def catch_up(index: int) -> int:
                if index % 2:
                    async with client.get(f"{base}/feeds/{FEED}.atom") as response:
                        assert len(feedparser.parse(await response.read()).entries) == 6
                        return response.status
                async with client.ws_connect(f"{base}/live/ws/{LIVE}?since=0") as socket:
                    events = [await socket.receive_json(timeout=10) for _ in range(BIG_MESSAGES)]
                    await socket.close()
                assert len(events) == BIG_MESSAGES
                return 200

            tracemalloc.start()
            try:
                statuses = await asyncio.gather(*(catch_up(i) for i in range(10)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        return list(statuses), peak

    statuses, peak = run(scenario)
    assert statuses == [200] * 10
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads, "the catch-ups read nothing"
    assert not [s for s in reads if "messages.body" in s], "a catch-up loaded message bodies"
    # Ten concurrent catch-ups of six 4 MiB messages: re-parsing bodies held 24+ MiB each.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    print(
        f"\n[http] 10 concurrent catch-ups of {BIG_MESSAGES} x {BIG_BYTES >> 20} MiB messages: "
        f"peak traced memory {peak / 2**20:.1f} MiB"
    )


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_connections = 0", "http.max_connections"),
        ("max_connections_per_ip = -1", "http.max_connections_per_ip"),
        ("header_timeout_seconds = 0", "http.header_timeout_seconds"),
        ("send_timeout_seconds = 99999", "http.send_timeout_seconds"),
        ("max_live_clients_per_token = 0", "http.max_live_clients_per_token"),
        ("max_body_bytes = 10", "http.max_body_bytes"),
        ('keepalive_timeout_seconds = "soon"', "http.keepalive_timeout_seconds"),
    ],
)
def test_http_limits_config_refuses_bad_values_naming_the_key(
    tmp_path: Path, line: str, key: str
) -> None:
    from fmn_core.config import load_config
    from fmn_core.errors import ConfigError

    path = tmp_path / "fmn.toml"
    path.write_text(f"[http]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert key in str(caught.value)


def test_http_limits_config_reads_every_key(tmp_path: Path) -> None:
    from fmn_core.config import load_config

    path = tmp_path / "fmn.toml"
    path.write_text(
        "[http]\nmax_connections = 100\nmax_connections_per_ip = 0\n"
        "header_timeout_seconds = 5\nkeepalive_timeout_seconds = 7.5\n"
        "max_live_clients = 9\nmax_live_clients_per_token = 2\n",
        encoding="utf-8",
    )
    http = load_config(path).http
    assert (http.max_connections, http.max_connections_per_ip) == (100, 0)
    assert (http.header_timeout_seconds, http.keepalive_timeout_seconds) == (5.0, 7.5)
    assert (http.max_live_clients, http.max_live_clients_per_token) == (9, 2)
