"""Push, desktop and Android through Apprise to a real HTTP receiver on loopback.

FCM is the one exception: Google's endpoints can't run here, so the FCM plugin's
send URL is pointed at the local receiver and the service-account key's
``token_uri`` at a local token server; everything else (JWT signing, the
request Apprise builds) is real.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from apprise.plugins.fcm import NotifyFCM
from core.test_rendering import claimed
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hostile_http import HostileServer, hostile_server

from daemon.conftest import WITH_JSON, PushReceiver
from fmn_core.config import FcmConfig, PushConfig
from fmn_core.library_http import bounded_requests
from fmn_core.rendering import render
from fmn_daemon.transports import TransportError, TransportRefused
from fmn_daemon.transports._apprise import MAX_REPLY_BYTES
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS, AndroidTransport, PushTransport

OPEN = PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=True, timeout_seconds=5)
RENDERED = render(claimed())


class _Server:
    """A tiny HTTP server answering every request with one fixed response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        outer = self
        self.hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.hits.append(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_push_json_reaches_the_receiver(push_receiver: PushReceiver) -> None:
    url = f"json://127.0.0.1:{push_receiver.port}/hooks/fmn"
    asyncio.run(PushTransport(OPEN).send(url, RENDERED))
    (request,) = push_receiver.wait_for(1)
    assert request.method == "POST" and request.path == "/hooks/fmn"
    payload = request.json()
    assert payload["title"] == RENDERED.subject
    assert payload["message"] == RENDERED.short
    assert "https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28" in payload["message"]


def test_push_ntfy_reaches_the_receiver(push_receiver: PushReceiver) -> None:
    url = f"ntfy://127.0.0.1:{push_receiver.port}/fmn-jo"
    asyncio.run(PushTransport(OPEN).send(url, RENDERED))
    (request,) = push_receiver.wait_for(1)
    payload = request.json()
    assert payload["topic"] == "fmn-jo"
    assert payload["title"] == RENDERED.subject


def test_push_refuses_private_host_at_send_time(push_receiver: PushReceiver) -> None:
    closed = PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=False, timeout_seconds=5)
    with pytest.raises(TransportRefused) as caught:
        asyncio.run(
            PushTransport(closed).send(f"json://127.0.0.1:{push_receiver.port}/x", RENDERED)
        )
    assert "loopback" in caught.value.reason
    assert push_receiver.requests == []


def test_push_refuses_a_name_that_now_resolves_to_a_private_address(
    push_receiver: PushReceiver,
) -> None:
    lookups: list[str] = []

    def rebinding_resolver(host: str, port: object, *args: object) -> list[tuple[Any, ...]]:
        lookups.append(host)
        return [(2, 1, 6, "", ("10.1.2.3", 0))]

    transport = PushTransport(
        PushConfig(allowed_schemes=WITH_JSON, timeout_seconds=5), resolver=rebinding_resolver
    )
    with pytest.raises(TransportRefused) as caught:
        asyncio.run(transport.send("json://push.example.org/hook", RENDERED))
    assert lookups == ["push.example.org"]
    assert "private address" in caught.value.reason


def test_push_refuses_a_scheme_no_longer_allowed(push_receiver: PushReceiver) -> None:
    only_ntfy = PushConfig(allowed_schemes=("ntfy",), allow_private_hosts=True)
    with pytest.raises(TransportRefused):
        asyncio.run(
            PushTransport(only_ntfy).send(f"json://127.0.0.1:{push_receiver.port}/", RENDERED)
        )
    assert push_receiver.requests == []


def test_push_does_not_follow_redirects(push_receiver: PushReceiver) -> None:
    location = {"Location": f"{push_receiver.url}/stolen"}
    with _Server(307, location, b"") as redirector:
        # Even a URL that asks for redirects to be followed does not get them.
        url = f"json://127.0.0.1:{redirector.port}/hook?redirect=yes"
        with pytest.raises(TransportError):
            asyncio.run(PushTransport(OPEN).send(url, RENDERED))
        assert redirector.hits == ["/hook"]
    assert push_receiver.requests == []


def test_push_server_error_is_a_retryable_transport_error(
    push_receiver: PushReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apprise")
    push_receiver.status = 500
    url = f"json://fmn:hunter2@127.0.0.1:{push_receiver.port}/secret-topic"
    with pytest.raises(TransportError) as caught:
        asyncio.run(PushTransport(OPEN).send(url, RENDERED))
    assert not isinstance(caught.value, TransportRefused)
    assert push_receiver.wait_for(1)[0].path == "/secret-topic"
    for text in (caught.value.reason, caplog.text):
        assert "secret-topic" not in text and "hunter2" not in text


# -- servers that answer slowly, or too much ------------------------------------------


@contextmanager
def answering(
    answer: Callable[[socket.socket], None],
) -> Iterator[tuple[HostileServer, threading.Event]]:
    """A hostile server whose every request ``answer`` takes, and an event set once an
    answer is over (fmn hung up, or it was all sent)."""
    ended = threading.Event()

    def answer_then_note(conn: socket.socket, request: bytes) -> None:
        try:
            answer(conn)
        finally:
            ended.set()

    with hostile_server(answer_then_note) as server:
        yield server, ended


def ntfy_url(server: HostileServer, topic: str = "t") -> str:
    return f"{server.url.replace('http://', 'ntfy://')}/{topic}"


def _drip_headers(connection: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 600:
        connection.sendall(bytes([byte]))
        time.sleep(0.1)


def drip_body(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
    for _ in range(600):
        connection.sendall(b" ")
        time.sleep(0.1)


def _endless_body(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    for _ in range(100_000):  # 6.5 GB if nobody stops reading
        connection.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))


@functools.cache
def _bomb() -> bytes:
    """256 MiB of zeros, 256 KiB gzipped."""
    return gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9)


def _gzip_bomb(connection: socket.socket) -> None:
    body = _bomb()
    connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    connection.sendall(body)


@pytest.mark.parametrize("answer", [_drip_headers, drip_body], ids=["headers", "body"])
def test_push_a_server_that_drips_its_answer_is_cut_off_at_the_deadline(answer: Any) -> None:
    """A read timeout alone never ends a send whose server sends a byte now and then."""
    config = PushConfig(allow_private_hosts=True, timeout_seconds=1)
    with answering(answer) as (server, ended):
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            asyncio.run(PushTransport(config).send(ntfy_url(server), RENDERED))
        took = time.monotonic() - started
        # fmn hung up: the server's writes failed long before its answer was all sent.
        assert ended.wait(5)
    deadline = config.timeout_seconds * SEND_DEADLINE_TIMEOUTS
    assert "did not answer within 3 s" in caught.value.reason
    assert deadline - 0.5 < took < deadline + 5


@pytest.mark.parametrize("answer", [_endless_body, _gzip_bomb], ids=["endless", "gzip-bomb"])
def test_push_a_reply_too_large_is_refused_after_reading_a_little(answer: Any) -> None:
    _bomb()  # made before memory is traced: the server's own
    with answering(answer) as (server, _):
        tracemalloc.start()
        try:
            with pytest.raises(TransportError) as caught:
                asyncio.run(PushTransport(OPEN).send(ntfy_url(server), RENDERED))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert f"larger than {MAX_REPLY_BYTES // 1024} KiB" in caught.value.reason
    assert peak < 32 * 1024 * 1024, f"{peak / 2**20:.0f} MiB held reading the reply"
    # Asked for the reply as it is: its size on the wire is the size it reads as.
    assert b"accept-encoding: identity" in server.requests[0].lower()


def test_push_the_bounds_stay_with_push_sends() -> None:
    """Requests made elsewhere in the daemon (the account directory's) are untouched."""
    with answering(_endless_body) as (server, _):
        with bounded_requests(5, max_bytes=MAX_REPLY_BYTES, server="a push server"):
            pass
        response = requests.get(f"{server.url}/", stream=True, timeout=5)
        read = sum(len(c) for _, c in zip(range(8), response.iter_content(65536), strict=False))
        response.close()
    assert read == 8 * 65536 > MAX_REPLY_BYTES


# -- Android and FCM -----------------------------------------------------------------


@pytest.fixture
def token_server() -> Iterator[_Server]:
    """Stands in for Google's OAuth token endpoint."""
    body = json.dumps(
        {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}
    ).encode()
    with _Server(200, {"Content-Type": "application/json"}, body) as server:
        yield server


@pytest.fixture
def fcm_keyfile(tmp_path: Path, token_server: _Server) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "fmn-test",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "fmn@fmn-test.iam.gserviceaccount.com",
                "token_uri": f"http://127.0.0.1:{token_server.port}/token",
            }
        )
    )
    return path


def test_android_fcm_token_goes_through_the_operators_project(
    push_receiver: PushReceiver,
    fcm_keyfile: Path,
    token_server: _Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        NotifyFCM, "notify_oauth2_url", f"{push_receiver.url}/v1/projects/{{project}}/messages:send"
    )
    fcm = FcmConfig(project="fmn-test", keyfile=str(fcm_keyfile))
    transport = AndroidTransport(PushTransport(OPEN), fcm, OPEN)
    device = "fcm:" + "dEvIcE-ToKeN_0123456789:abc"
    asyncio.run(transport.send(device, RENDERED))
    (request,) = push_receiver.wait_for(1)
    assert token_server.hits == ["/token"]
    assert request.path == "/v1/projects/fmn-test/messages:send"
    assert request.headers["Authorization"] == "Bearer ya29.test-token"
    message = request.json()["message"]
    assert message["token"] == "dEvIcE-ToKeN_0123456789:abc"
    assert message["notification"]["title"] == RENDERED.subject


def test_android_fcm_refused_when_the_operator_has_no_firebase_project(
    push_receiver: PushReceiver,
) -> None:
    transport = AndroidTransport(PushTransport(OPEN), FcmConfig(), OPEN)
    with pytest.raises(TransportRefused):
        asyncio.run(transport.send("fcm:dEvIcE-ToKeN_0123456789", RENDERED))


def test_android_apprise_url_goes_through_push(push_receiver: PushReceiver) -> None:
    transport = AndroidTransport(PushTransport(OPEN), FcmConfig(), OPEN)
    asyncio.run(transport.send(f"ntfy://127.0.0.1:{push_receiver.port}/phone", RENDERED))
    assert push_receiver.wait_for(1)[0].json()["topic"] == "phone"
