"""Push URLs nobody has proved yet, and servers that lie: what leaves fmn, on the wire.

- Matrix homeserver discovery: a ``matrixs://`` server whose ``.well-known`` names
  another host (loopback here) must not get fmn to talk to that host, let alone
  log in there with the user's password. A real HTTPS server on loopback plays the
  hostile homeserver; a second one plays the host it points at.
- A confirmation code goes to a json URL whose query picks the method, headers,
  query parameters and payload fields: none of those reach the server.
- A user with an unconfirmed push URL and due notifications: the daemon sends the
  code there and nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import apprise
import pytest
from core.test_outbox import add_notification, state_of
from core.test_rendering import claimed
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from daemon.conftest import WITH_JSON, PushReceiver
from daemon.test_delivery import drain, make_config
from sqlalchemy import select

from fmn_core import preferences
from fmn_core.config import PushConfig
from fmn_core.db import Database
from fmn_core.models import User
from fmn_core.rendering import render, render_confirmation
from fmn_daemon.delivery import NO_ADDRESS_ERROR, Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports import TransportError
from fmn_daemon.transports.live import LiveHub
from fmn_daemon.transports.push import PushTransport

OPEN = PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=True, timeout_seconds=5)


# --- a hostile Matrix homeserver over HTTPS on loopback -----------------------------


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the plugin is told not to verify)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class _HttpsServer:
    """An HTTPS server on loopback answering from ``answers`` (path prefix -> JSON)."""

    context: ssl.SSLContext
    answers: dict[str, tuple[int, Any]]
    hits: list[tuple[str, str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.hits.append((self.command, self.path, body))
                status, document = next(
                    (a for p, a in outer.answers.items() if self.path.startswith(p)),
                    (404, {"errcode": "M_NOT_FOUND"}),
                )
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self.context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hostile_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_HttpsServer, _HttpsServer]]:
    """(the homeserver in the URL, the host its .well-known points at)."""
    cert, key = _certificate(tmp_path)
    # requests trusts the test certificate; nothing has to turn verification off.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    forbidden_answers = {
        "/_matrix/client/versions": (200, {"versions": ["v1.1", "r0.6.1"]}),
        "/_matrix/client": (
            200,
            {"access_token": "stolen", "user_id": "@fmn:x", "home_server": "x"},
        ),
    }
    forbidden = _HttpsServer(context, forbidden_answers)
    homeserver = _HttpsServer(
        context,
        {
            "/.well-known/matrix/client": (
                200,
                {"m.homeserver": {"base_url": f"https://127.0.0.1:{forbidden.port}"}},
            ),
            "/_matrix/client/versions": (200, {"versions": ["v1.1", "r0.6.1"]}),
            "/_matrix/client": (403, {"errcode": "M_FORBIDDEN", "error": "no"}),
        },
    )
    try:
        yield homeserver, forbidden
    finally:
        homeserver.close()
        forbidden.close()


def test_push_matrix_discovery_to_loopback_refused(
    hostile_matrix: tuple[_HttpsServer, _HttpsServer], figures: Any
) -> None:
    homeserver, forbidden = hostile_matrix
    url = f"matrixs://fmn:hunter2@127.0.0.1:{homeserver.port}/%23room?discovery=yes"
    # Control: Apprise left to itself follows the .well-known answer to the other
    # host and logs in there, so the servers really are hostile.
    unguarded = apprise.Apprise.instantiate(url)
    assert unguarded is not None, "Apprise knows matrixs:// URLs"
    unguarded.socket_connect_timeout = unguarded.socket_read_timeout = 5
    unguarded.notify(body="x", title="x")
    followed = len(forbidden.hits)
    password_sent = any(b"hunter2" in body for _, _, body in forbidden.hits)
    assert followed > 0, "the hostile .well-known was not followed: the control failed"
    forbidden.hits.clear()
    homeserver.hits.clear()

    # fmn, the URL asking for discovery even: nothing reaches the derived host.
    with pytest.raises(TransportError):
        asyncio.run(PushTransport(OPEN).send(url, render(claimed())))
    assert forbidden.hits == []
    assert not any(path.startswith("/.well-known") for _, path, _ in homeserver.hits)
    assert homeserver.hits, "fmn did not even try the homeserver in the URL"
    figures(
        unguarded_requests_to_derived_host=followed,
        unguarded_sent_password=password_sent,
        fmn_requests_to_derived_host=0,
        fmn_requests_to_url_host=len(homeserver.hits),
    )


# --- confirmation codes to json URLs --------------------------------------------------


def test_push_confirmation_carries_no_user_chosen_method_or_headers(
    push_receiver: PushReceiver, figures: Any
) -> None:
    url = (
        f"json://127.0.0.1:{push_receiver.port}/hook"
        "?method=PUT&+X-Evil=1&%2BX-Encoded=2&-q=4&:extra=5&:message=renamed"
    )
    transport = PushTransport(OPEN)
    asyncio.run(transport.send(url, render_confirmation("push", "ABCD2345")))
    (plain,) = push_receiver.wait_for(1)
    assert plain.method == "POST" and plain.path == "/hook"
    assert not {"x-evil", "x-encoded"} & {name.lower() for name in plain.headers}
    payload = plain.json()
    assert "extra" not in payload and "renamed" not in payload
    assert "ABCD2345" in payload["message"]

    # Control: once confirmed, the owner's own options apply to notifications.
    asyncio.run(transport.send(url, render(claimed())))
    shaped = push_receiver.wait_for(2)[1]
    assert shaped.method == "PUT" and shaped.headers.get("X-Evil") == "1"
    assert shaped.path == "/hook?q=4"
    figures(confirmation=f"{plain.method} {plain.path}", confirmed=f"{shaped.method} {shaped.path}")


def test_push_unconfirmed_url_gets_only_the_confirmation(
    db: Database, push_receiver: PushReceiver, figures: Any
) -> None:
    alice = preferences.Actor("alice")
    url = f"json://127.0.0.1:{push_receiver.port}/alice?method=PUT&+X-Evil=1"
    config = make_config(db)
    db.config = config
    db.sessionmaker.configure(info=db.session_info())
    with db.begin() as session:
        pending = preferences.set_destination(session, alice, "push", url)
        user = session.scalars(select(User).where(User.name == "alice")).one()
        row_ids = [add_notification(session, user, "push").id for _ in range(3)]
    drain(Senders(db, config, Metrics(), LiveHub()))
    requests = push_receiver.wait_for(1)
    assert len(requests) == 1, [(r.method, r.path) for r in requests]
    (only,) = requests
    assert only.method == "POST" and only.path == "/alice" and "X-Evil" not in only.headers
    assert pending.code is not None and pending.code in only.json()["message"]
    for row_id in row_ids:
        row = state_of(db, row_id)
        assert row.state in ("pending", "failed") and row.sent_at is None
        assert row.last_error == NO_ADDRESS_ERROR
    figures(
        backend=db.engine.dialect.name,
        requests_to_unconfirmed_url=len(requests),
        notifications_held=len(row_ids),
    )
