"""The HTTP surface under hostile connections: real server on loopback, real sockets.

Each test is named after a case issue 10 found or asked for: idle and slowloris
connections, keep-alive, connection caps (in all and per client address), the
descriptor limit, accept errors, and the ``[http]`` settings. Live clients,
feeds and the unsubscribe link are in ``test_http_clients.py``.
"""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import logging
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from core.test_outbox import add_user

from daemon.test_http import http_config, run, serving, sqlite_database
from fmn_core.config import Config, HttpConfig
from fmn_core.db import Database
from fmn_daemon.limits import DESCRIPTOR_RESERVE, AcceptErrorLog, connection_cap
from fmn_daemon.rate_limited_log import RateLimitedLog

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
