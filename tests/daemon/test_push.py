"""Push, desktop and Android through Apprise to a real HTTP receiver on loopback.

FCM is the one exception: Google's endpoints can't run here, so the FCM plugin's
send URL is pointed at the local receiver and the service-account key's
``token_uri`` at a local token server; everything else (JWT signing, the
request Apprise builds) is real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from apprise.plugins.fcm import NotifyFCM
from core.test_rendering import claimed
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon.conftest import WITH_JSON, PushReceiver
from fmn_core.config import FcmConfig, PushConfig
from fmn_core.rendering import render
from fmn_daemon.transports import TransportError, TransportRefused
from fmn_daemon.transports.push import AndroidTransport, PushTransport

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
