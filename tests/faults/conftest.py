"""Fixtures for the faults suite: the daemon as a process to kill, services to break.

- ``figures``: every fault test reports what it measured. The figures are printed,
  appended as one JSON line to ``faults-results.jsonl`` in pytest's base temporary
  directory, and listed again in the terminal summary (no ``-s`` needed).
- ``DaemonProcess``: ``fmn-daemon run`` exactly as an operator starts it, in a
  subprocess whose log goes to a file per run; SIGKILL, SIGTERM, ``/ready``,
  ``/metrics``.
- ``PrivatePostgres`` / ``PrivateRabbitMQ``: a PostgreSQL cluster and a RabbitMQ
  node of the test's own, on free loopback ports, which a test may stop and start
  at will. The machine's shared PostgreSQL and RabbitMQ are never stopped: other
  test runs use them.
- The SMTP server, push receiver, unique broker names and fresh PostgreSQL
  databases are the daemon tests' fixtures (``tests/daemon/conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon.conftest import (  # noqa: F401 - fixtures shared with the daemon tests
    PushReceiver,
    RabbitMQ,
    SmtpServer,
    _CollectingHandler,
    free_port,
    push_receiver,
    rabbitmq,
    smtp_server,
    write_fedora_messaging_config,
)

RESULTS_NAME = "faults-results.jsonl"


def faults_full() -> bool:
    """``FMN_FAULTS_FULL=1`` asks for the full-size runs (longer than the suite's budget)."""
    return os.environ.get("FMN_FAULTS_FULL", "") not in ("", "0")


def env_int(name: str, default: int) -> int:
    """An integer from the environment (a size override), else ``default``."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --------------------------------------------------------------------------- figures


def _results_path(config: pytest.Config) -> Path:
    factory = config._tmp_path_factory  # type: ignore[attr-defined]
    return Path(factory.getbasetemp()) / RESULTS_NAME


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """``figures(**values)``: print them and append them as a JSON line to the results file."""
    path = _results_path(request.config)

    def record(**values: Any) -> dict[str, Any]:
        line = {"test": request.node.nodeid, **values}
        text = ", ".join(f"{k}={v}" for k, v in values.items())
        print(f"\n[faults] {request.node.name}: {text}")
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")
        # The line is there for whoever reads the file after the run.
        written = [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines()]
        assert line["test"] in {entry["test"] for entry in written}
        return line

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List the faults suite's figures at the end of the run."""
    try:
        path = _results_path(config)
    except Exception:
        return
    if not path.exists():
        return
    terminalreporter.section("fmn faults figures")
    terminalreporter.write_line(f"(also in {path})")
    for raw in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(raw)
        name = entry.pop("test").split("::")[-1]
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in entry.items()))


# --------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


# --------------------------------------------------------------------------- the daemon


def write_daemon_config(
    path: Path,
    database_url: str,
    http_port: int,
    *,
    smtp_port: int | None = None,
    extra: str = "",
) -> Path:
    """An fmn TOML file for a daemon under fault: quick retries, short leases."""
    smtp = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntimeout_seconds = 5\n'
        if smtp_port
        else ""
    )
    path.write_text(
        f"database_url = {json.dumps(database_url)}\n{extra}\n{smtp}"
        f'[http]\nport = {http_port}\npublic_url = "http://127.0.0.1:{http_port}"\n'
        'secret_key = "faults-secret"\n',
        encoding="utf-8",
    )
    return path


@dataclass
class DaemonProcess:
    """``fmn-daemon run`` in a subprocess; each run logs to a file of its own."""

    config: Path
    fm_config: Path
    http_port: int
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> None:
        assert self.process is None or self.process.poll() is not None
        self.runs += 1
        log = self.log_dir / f"daemon.{self.runs}.log"
        self.logs.append(log)
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [
                    # faulthandler: ``dump_stacks`` (SIGABRT) shows where a stuck daemon waits.
                    sys.executable,
                    "-X",
                    "faulthandler",
                    "-m",
                    "fmn_daemon.cli",
                    "--config",
                    str(self.config),
                    "run",
                    "--fedora-messaging-config",
                    str(self.fm_config),
                    "--startup-timeout",
                    "30",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        if wait_ready:
            self.wait_ready(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.base_url}{path}", timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode(errors="replace")

    def ready(self) -> bool:
        try:
            return self._get("/ready")[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.process is not None
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}):\n{self.output()[-4000:]}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"the daemon was not ready within {timeout}s:\n{self.output()[-4000:]}"
        )

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{name: value}`` (labels kept in the name)."""
        status, text = self._get("/metrics", timeout=10)
        assert status == 200, text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def dump_stacks(self) -> str:
        """SIGABRT a stuck daemon: faulthandler writes every thread's stack to its log."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
        text = self.output()
        start = text.rfind("Fatal Python error")
        return text[start:] if start >= 0 else text[-4000:]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"the daemon did not stop on SIGTERM:\n{self.output()[-4000:]}"
                ) from None
        return int(self.process.returncode)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """``make_daemon(database_url, fm_config, *, smtp_port=None, extra="")``; killed at the end."""
    daemons: list[DaemonProcess] = []

    def make(
        database_url: str, fm_config: Path, *, smtp_port: int | None = None, extra: str = ""
    ) -> DaemonProcess:
        index = len(daemons)
        port = free_port()
        config = write_daemon_config(
            tmp_path / f"fmn-{index}.toml", database_url, port, smtp_port=smtp_port, extra=extra
        )
        log_dir = tmp_path / f"daemon-{index}"
        log_dir.mkdir()
        daemon = DaemonProcess(config, fm_config, port, log_dir)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        if daemon.alive():
            daemon.kill()


def upgrade_schema(database_url: str) -> None:
    """Migrate an empty database to the newest schema (``fmn-daemon db upgrade``)."""
    from fmn_core.schema import upgrade

    upgrade(database_url)


# --------------------------------------------------------------------------- SMTP


class RestartableSmtp(SmtpServer):
    """An aiosmtpd server on a fixed port that a test can take down and bring back."""

    controller: Any = None

    def up(self) -> None:
        from aiosmtpd.controller import Controller

        assert self.controller is None
        controller = Controller(_CollectingHandler(self), hostname=self.host, port=self.port)
        controller.start()  # returns once the server answers
        self.controller = controller

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def restartable_smtp() -> Iterator[RestartableSmtp]:
    """An SMTP server on 127.0.0.1 that ``down()`` and ``up()`` stop and start."""
    server = RestartableSmtp(host="127.0.0.1", port=free_port())
    server.up()
    try:
        yield server
    finally:
        server.down()


# --------------------------------------------------------------------------- private PostgreSQL


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` account then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, which it may stop and start."""

    root: Path
    port: int
    bin: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            _as_postgres_user([str(self.bin / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        # fsync=off only skips flushing the OS cache, which a process crash (what
        # ``stop("immediate")`` is) keeps. synchronous_commit must stay on: with it
        # off, a crash loses transactions whose COMMIT had already returned.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh PostgreSQL cluster on a free loopback port, removed afterwards."""
    binaries = _postgres_bin()
    if binaries is None:
        from conftest import service_missing

        service_missing("PostgreSQL (server binaries for a private cluster)", "pg_ctl not found")
    assert binaries is not None
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="fmn-faults-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    cluster = PrivatePostgres(root, free_port(), binaries)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- private RabbitMQ

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


@dataclass
class PrivateRabbitMQ:
    """A RabbitMQ node of this test's own (its own name, ports, Mnesia and cookie)."""

    root: Path
    node: str
    port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        plugins = self.root / "enabled_plugins"
        if not plugins.exists():
            plugins.write_text("[].\n", encoding="utf-8")
        return dict(
            os.environ,
            HOME=str(self.root),  # the Erlang cookie lives here, shared with rabbitmqctl
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.root / "plugins-expand"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.root / "advanced.config"),
            RABBITMQ_PID_FILE=str(self.root / "node.pid"),
        )

    def answers(self) -> bool:
        import pika
        import pika.exceptions

        parameters = pika.URLParameters(self.amqp_url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 2
        try:
            pika.BlockingConnection(parameters).close()
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True

    def start(self, timeout: float = 90.0) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        with (self.root / f"server.{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise AssertionError(f"the private RabbitMQ node exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the private RabbitMQ node did not start:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, timeout: float = 60.0) -> None:
        """``rabbitmqctl stop``: the node shuts down and every connection is closed."""
        if self.process is None or self.process.poll() is not None:
            return
        subprocess.run(
            [str(RABBITMQCTL), "-n", self.node, "stop"],
            env=self.env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node's own process group (only what ``start`` spawned)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self) -> str:
        logs = sorted(self.root.glob("server.*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node on free loopback ports, stopped and removed afterwards."""
    if not RABBITMQ_SERVER.exists():
        from conftest import service_missing

        service_missing("RabbitMQ (server for a private node)", f"{RABBITMQ_SERVER} not found")
    root = Path(tempfile.mkdtemp(prefix="fmn-faults-rmq-"))
    node = PrivateRabbitMQ(
        root, f"fmnfault-{uuid.uuid4().hex[:10]}@localhost", free_port(), free_port()
    )
    try:
        node.start()
        yield node
    finally:
        node.stop()
        node.kill()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- bus messages


@dataclass
class Outgoing:
    """One AMQP delivery to publish: the raw parts, so they can be broken on purpose."""

    message_id: str | None
    topic: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_encoding: str | None = "utf-8"


def corpus_messages() -> list[dict[str, Any]]:
    """The shared corpus as ``{"topic", "headers", "body"}`` dicts (ids are made per use)."""
    from conftest import corpus_lines

    out = []
    for line in corpus_lines():
        data = json.loads(line)
        out.append(
            {"topic": data["topic"], "headers": data.get("headers") or {}, "body": data["body"]}
        )
    return out


def outgoing(message: dict[str, Any]) -> Outgoing:
    """A well-formed delivery of ``message`` (``id``, ``topic``, ``headers``, ``body``)."""
    return Outgoing(
        message["id"],
        message["topic"],
        json.dumps(message["body"]).encode(),
        dict(message["headers"]),
    )


class Publisher:
    """Publishes raw deliveries with pika, with publisher confirms (the broker has them)."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        import pika

        self.exchange = exchange
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.channel.confirm_delivery()
        self.published = 0

    def publish(self, item: Outgoing) -> None:
        import pika

        self.channel.basic_publish(
            self.exchange,
            item.topic,
            item.body,
            pika.BasicProperties(
                content_type="application/json",
                content_encoding=item.content_encoding,
                delivery_mode=2,
                headers=item.headers,
                message_id=item.message_id,
            ),
        )
        self.published += 1

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def expected_recipients(
    database_url: str, messages: list[dict[str, Any]]
) -> set[tuple[str, str, str]]:
    """``(message id, user, context)`` for every notification fmn_core's matcher expects."""
    from fmn_core.config import Config
    from fmn_core.db import Database
    from fmn_core.matcher import Matcher
    from fmn_core.messages import facts_of, load_message

    db = Database(Config(database_url=database_url))
    try:
        with db.begin() as session:
            matcher = Matcher.load(session)
    finally:
        db.dispose()
    expected: set[tuple[str, str, str]] = set()
    for message in messages:
        facts = facts_of(load_message(message))
        expected.update((message["id"], r.user, r.context) for r in matcher.recipients(facts))
    return expected


def outbox_rows(database_url: str) -> list[tuple[str, str, str, str, int]]:
    """Every outbox row as ``(message id, user, context, state, attempts)``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT n.message_id, u.name, n.context, n.state, n.attempts "
                    "FROM notifications n JOIN users u ON u.id = n.user_id"
                )
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def count_rows(database_url: str, table: str) -> int:
    """How many rows a table holds."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def mails_by_message(server: SmtpServer) -> dict[tuple[str, str], int]:
    """How many mails the SMTP server took per ``(X-Fedmsg-Id, recipient)``."""
    counts: dict[tuple[str, str], int] = {}
    with server.lock:
        received = list(server.messages)
    for mail in received:
        message_id = str(mail.message["X-Fedmsg-Id"] or "")
        for rcpt in mail.rcpt_tos:
            counts[(message_id, rcpt)] = counts.get((message_id, rcpt), 0) + 1
    return counts


def mail_ids_by_message(server: SmtpServer) -> dict[tuple[str, str], set[str]]:
    """The ``Message-ID`` headers the SMTP server saw per ``(X-Fedmsg-Id, recipient)``."""
    seen: dict[tuple[str, str], set[str]] = {}
    with server.lock:
        received = list(server.messages)
    for mail in received:
        message_id = str(mail.message["X-Fedmsg-Id"] or "")
        for rcpt in mail.rcpt_tos:
            seen.setdefault((message_id, rcpt), set()).add(str(mail.message["Message-ID"]))
    return seen


def set_up_watcher(database_url: str, context: str = "rss", address: str | None = None) -> None:
    """User ``watcher``, whose ``context`` gets every message (``topic_matches *``)."""
    from fmn_core import preferences
    from fmn_core.config import Config
    from fmn_core.db import Database
    from fmn_core.preferences import Actor

    db = Database(Config(database_url=database_url))
    try:
        with db.begin() as session:
            actor = Actor("watcher")
            preferences.add_filter(session, actor, context, "everything")
            preferences.add_rule(
                session, actor, context, "everything", "topic_matches", {"pattern": "*"}
            )
            pending = preferences.set_destination(session, actor, context, address)
            if pending.code is not None:
                assert preferences.confirm(session, actor, pending.code).confirmed
    finally:
        db.dispose()


def fresh_messages(count: int, prefix: str, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` corpus messages, each with a new id starting with ``prefix``."""
    import random

    rng = random.Random(seed)
    corpus = corpus_messages()
    return [
        dict(rng.choice(corpus), id=f"{prefix}-{i:05d}-{uuid.uuid4().hex[:8]}")
        for i in range(count)
    ]


def publish_messages(amqp_url: str, exchange: str, messages: list[dict[str, Any]]) -> None:
    """Publish well-formed deliveries of ``messages`` (publisher confirms)."""
    publisher = Publisher(amqp_url, exchange)
    try:
        for message in messages:
            publisher.publish(outgoing(message))
    finally:
        publisher.close()


def background(target: Callable[[], None], name: str) -> threading.Thread:
    """Start ``target`` in a daemon thread."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
