"""Fixtures for the daemon's tests: real SMTP, HTTP push, RabbitMQ and Synapse on loopback.

Each server listens on 127.0.0.1 on a free port, is ready before the test starts
and is stopped in ``finally``. RabbitMQ tests get uniquely named queues and
exchanges, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pytest
from conftest import RABBITMQ_URL, service_missing  # tests/conftest.py (tests/ is on sys.path)
from fedora_messaging import message as fm_message
from matrix_server import Synapse, synapse_homeserver  # tests/matrix_server.py

from fmn_core.config import PushConfig

if TYPE_CHECKING:
    from fmn_daemon.service import Service


def serve_during(service: Service, checks: Callable[[], object], ready_within: float = 60.0) -> int:
    """Serve ``service`` in this process; once it is ready, run ``checks`` in a thread,
    then stop it as systemd does (SIGTERM). Returns the daemon's exit status."""

    async def scenario() -> int:
        async def drive() -> None:
            deadline = time.monotonic() + ready_within
            try:
                while not service.metrics.ready:
                    assert time.monotonic() < deadline, f"not ready within {ready_within}s"
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(checks)
            finally:
                service.handle_exit(signal.SIGTERM)

        driver = asyncio.create_task(drive())
        code = await service.serve()
        await driver
        return code

    return asyncio.run(scenario())


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- SMTP


@dataclass
class ReceivedMail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")


@dataclass
class SmtpServer:
    """A running aiosmtpd server; ``messages`` fills as mail arrives."""

    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; return them all."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)


class _CollectingHandler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        with self.server.arrived:
            self.server.messages.append(
                ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), bytes(data))
            )
            self.server.arrived.notify_all()
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An aiosmtpd SMTP server on 127.0.0.1 collecting every message it gets."""
    from aiosmtpd.controller import Controller

    server = SmtpServer(host="127.0.0.1", port=free_port())
    controller = Controller(_CollectingHandler(server), hostname=server.host, port=server.port)
    controller.start()  # returns once the server answers
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class CountingServer:
    """An aiosmtpd server that counts connections and mail transactions, and misbehaves
    on request: it refuses chosen recipients, or closes a session after some mails."""

    host: str
    port: int
    refuse: set[str] = field(default_factory=set)
    #: Close the session after this many mails on it (0: never).
    close_after: int = 0
    #: Refuse the data of mails to these recipients, then close the session.
    refuse_and_close: set[str] = field(default_factory=set)
    sessions: list[Any] = field(default_factory=list)
    mails: list[tuple[int, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session_index(self, session: Any) -> int:
        with self.lock:
            for i, known in enumerate(self.sessions):
                if known is session:
                    return i
            self.sessions.append(session)
            return len(self.sessions) - 1

    @property
    def recipients(self) -> list[str]:
        with self.lock:
            return [to for _, tos, _ in self.mails for to in tos]


class _CountingHandler:
    def __init__(self, server: CountingServer) -> None:
        self.server = server

    async def handle_EHLO(
        self, _server: Any, session: Any, _envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.server.session_index(session)
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: list[str]
    ) -> str:
        if address in self.server.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        index = self.server.session_index(session)
        if set(envelope.rcpt_tos) & self.server.refuse_and_close:
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "554 5.7.1 message rejected as spam"
        with self.server.lock:
            self.server.mails.append((index, list(envelope.rcpt_tos), bytes(envelope.content)))
            on_session = sum(1 for i, _, _ in self.server.mails if i == index)
        if self.server.close_after and on_session >= self.server.close_after:
            # After the reply: the mail was taken, the session then goes away.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted for delivery"


def _authenticate(server: CountingServer) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        server.logins.append((data.login, data.password))
        return AuthResult(success=True)

    return authenticator


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    from aiosmtpd.controller import Controller

    server = CountingServer(host="127.0.0.1", port=free_port())
    controller = Controller(
        _CountingHandler(server),
        hostname=server.host,
        port=server.port,
        authenticator=_authenticate(server),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


# --------------------------------------------------------------------------- HTTP push


#: The push schemes of an operator who added json/jsons (off by default): tests send
#: json URLs to the local receiver, which records exactly what arrives.
WITH_JSON: tuple[str, ...] = (*PushConfig().allowed_schemes, "json", "jsons")


@dataclass
class PushRequest:
    """One request the push receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PushReceiver:
    """A running HTTP server recording requests; answers ``status`` to each."""

    host: str
    port: int
    requests: list[PushRequest] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[PushRequest]:
        """Block until at least ``count`` requests arrived; return them all."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)


def _push_handler(receiver: PushReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = PushRequest(
                method=self.command,
                path=urlsplit(self.path).path if self.path.startswith("http") else self.path,
                headers={k: v for k, v in self.headers.items()},
                body=body,
            )
            with receiver.arrived:
                receiver.requests.append(request)
                receiver.arrived.notify_all()
            payload = b'{"ok": true}'
            self.send_response(receiver.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_PUT = do_GET = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def push_receiver() -> Iterator[PushReceiver]:
    """A ThreadingHTTPServer on 127.0.0.1 recording every request it gets."""
    receiver = PushReceiver(host="127.0.0.1", port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _push_handler(receiver))
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="push-receiver",
        daemon=True,
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitMQ:
    """Unique names on a reachable broker, and a fedora-messaging config using them."""

    amqp_url: str
    queue: str
    exchange: str
    routing_key: str
    config_path: Path

    def publish_raw(
        self,
        body: bytes,
        *,
        routing_key: str | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish bytes straight to the test exchange with pika."""
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            channel.basic_publish(
                self.exchange,
                routing_key or self.routing_key,
                body,
                pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    headers=headers or {},
                    message_id=(str(uuid.uuid4()) if message_id is None else message_id) or None,
                ),
            )
        finally:
            connection.close()

    def queue_depth(self) -> int:
        """How many messages are ready in the test queue (declares it if needed)."""
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            frame = channel.queue_declare(self.queue, durable=True, passive=True)
            return int(frame.method.message_count)
        finally:
            connection.close()


def publish(broker: RabbitMQ, messages: list[fm_message.Message]) -> None:
    """Publish the way fedora-messaging does: its routing key, properties and body encoding."""
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for message in messages:
            channel.basic_publish(
                broker.exchange,
                message._encoded_routing_key,
                message._encoded_body,
                message._properties,
            )
    finally:
        connection.close()


def write_fedora_messaging_config(
    path: Path, amqp_url: str, queue: str, exchange: str, routing_keys: list[str]
) -> Path:
    """A fedora-messaging TOML file binding ``queue`` to ``exchange``."""
    keys = ", ".join(json.dumps(k) for k in routing_keys)
    path.write_text(
        f"""\
amqp_url = {json.dumps(amqp_url)}
publish_exchange = {json.dumps(exchange)}
passive_declares = false
topic_prefix = ""

[tls]
ca_cert = ""
keyfile = ""
certfile = ""

[client_properties]
app = "fmn tests"

[exchanges.{json.dumps(exchange)}]
type = "topic"
durable = true
auto_delete = false
arguments = {{}}

[queues.{json.dumps(queue)}]
durable = true
auto_delete = false
exclusive = false
arguments = {{}}

[[bindings]]
queue = {json.dumps(queue)}
exchange = {json.dumps(exchange)}
routing_keys = [{keys}]

[qos]
prefetch_size = 0
prefetch_count = 1000
""",
        encoding="utf-8",
    )
    return path


def _probe_parameters(url: str) -> Any:
    import pika

    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = 3
    return parameters


@pytest.fixture
def rabbitmq(tmp_path: Path) -> Iterator[RabbitMQ]:
    """A reachable broker with a unique queue, exchange and binding; cleaned up after."""
    import pika
    import pika.exceptions

    try:
        probe = pika.BlockingConnection(_probe_parameters(RABBITMQ_URL))
        probe.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        service_missing("RabbitMQ", f"{RABBITMQ_URL.split('@')[-1]}: {exc.__class__.__name__}")
    unique = uuid.uuid4().hex[:10]
    queue = f"fmn-test-{unique}"
    exchange = f"fmn-test-x-{unique}"
    config_path = write_fedora_messaging_config(
        tmp_path / "fedora-messaging.toml", RABBITMQ_URL, queue, exchange, ["#"]
    )
    broker = RabbitMQ(
        amqp_url=RABBITMQ_URL,
        queue=queue,
        exchange=exchange,
        routing_key=f"org.fedoraproject.test.{unique}",
        config_path=config_path,
    )
    try:
        yield broker
    finally:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(exchange)
            connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


# --------------------------------------------------------------------------- PostgreSQL


def write_fmn_config(path: Path, database_url: str, extra: str = "") -> Path:
    """An fmn TOML file using ``database_url``."""
    path.write_text(f"database_url = {json.dumps(database_url)}\n{extra}", encoding="utf-8")
    return path


# ------------------------------------------------------------------------- Matrix


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """A real Synapse homeserver on loopback (tests/matrix_server.py), one per session.

    Skips, naming why, when Synapse is not installed (it is in the ``test`` extra),
    except under CI, where that fails the run.
    """
    try:
        import synapse as _synapse  # noqa: F401
    except ImportError:
        service_missing("Synapse", "matrix-synapse is not installed (pip install -e '.[test]')")
    with synapse_homeserver(tmp_path_factory.mktemp("synapse")) as server:
        yield server
