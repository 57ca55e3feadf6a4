"""The daemon's life: start-up checks, systemd notifications, signals, clean stop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedora_messaging import message as fm_message
from sqlalchemy import text

from fmn_core.config import Config, HttpConfig
from fmn_core.db import make_engine
from fmn_core.schema import upgrade
from fmn_daemon import service as service_module
from fmn_daemon.service import Service
from fmn_daemon.systemd import Notifier, watchdog_interval

from .conftest import (
    RabbitMQ,
    free_port,
    serve_during,
    write_fedora_messaging_config,
    write_fmn_config,
)


class NotifySocket:
    """What systemd listens on: a unix datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.received: list[str] = []

    def collect(self, until: str, timeout: float = 20.0) -> list[str]:
        """Read datagrams until one holds ``until``; return everything read so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            if until in self.received[-1]:
                return self.received
        raise AssertionError(f"no {until!r} within {timeout}s; got {self.received}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = str(tmp_path / "notify.sock")
    listener = NotifySocket(path)
    try:
        yield path, listener
    finally:
        listener.close()


def test_notifier_sends_datagrams_to_a_path_socket(notify_socket: tuple[str, NotifySocket]) -> None:
    path, listener = notify_socket
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.ready("consuming")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()
    assert listener.collect("STOPPING=1") == [
        "READY=1\nSTATUS=consuming",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_notifier_supports_the_abstract_namespace() -> None:
    name = f"fmn-test-{uuid.uuid4().hex}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier("@" + name)
        assert notifier.ready()
        notifier.close()
        assert listener.collect("READY=1") == ["READY=1"]
    finally:
        listener.close()


def test_notifier_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_notifier_reports_a_vanished_socket(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.watchdog() is False
    notifier.close()


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "bogus"}) is None
    assert watchdog_interval({}) is None


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'service.sqlite'}"


def test_service_refuses_to_start_on_an_old_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, notify_socket: tuple[str, NotifySocket]
) -> None:
    path, listener = notify_socket
    config = Config(database_url=sqlite_url(tmp_path))
    service = Service(
        config, consume=False, deliver=False, serve_http=False, notifier=Notifier(path)
    )
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(service.serve()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "fmn-daemon db upgrade" in errors[0]
    with pytest.raises(AssertionError):
        listener.collect("READY=1", timeout=0.5)  # never claimed to be ready


def _start_error_after(tmp_path: Path, caplog: pytest.LogCaptureFixture, statement: str) -> str:
    """The one error the daemon logs when it starts on a schema that ``statement`` changed."""
    url = sqlite_url(tmp_path)
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()
    service = Service(Config(database_url=url), consume=False, deliver=False, serve_http=False)
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(service.serve()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    return errors[0]


def test_service_refuses_to_start_on_a_schema_a_newer_fmn_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error = _start_error_after(tmp_path, caplog, "UPDATE alembic_version SET version_num = '9001'")
    # Not "run `fmn-daemon db upgrade`": this fmn's upgrade can do nothing for it.
    assert "is at schema 9001, which this fmn does not know" in error
    assert "newer fmn" in error and "db upgrade" not in error


def test_service_says_what_is_wrong_with_a_schema_at_two_revisions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error = _start_error_after(
        tmp_path, caplog, "INSERT INTO alembic_version (version_num) VALUES ('0009')"
    )
    # fmn's own words, not "the database ... does not answer".
    assert "several schema revisions at once" in error
    assert "does not answer" not in error


def test_service_refuses_to_start_without_a_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(sqlite_url(tmp_path))
    fm_config = write_fedora_messaging_config(
        tmp_path / "fm.toml", f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", "q", "x", ["#"]
    )
    service = Service(
        Config(database_url=sqlite_url(tmp_path)), fm_config, deliver=False, serve_http=False
    )
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(service.serve()) == 1
    assert time.monotonic() - started < 15
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("fmn")
    ]
    assert len(errors) == 1
    assert "cannot connect to the broker" in errors[0] and "Connection refused" in errors[0]


def test_service_refuses_to_start_when_its_http_port_is_taken(tmp_path: Path) -> None:
    upgrade(sqlite_url(tmp_path))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = Config(database_url=sqlite_url(tmp_path), http=HttpConfig(port=port))
        service = Service(config, consume=False, deliver=False)
        assert asyncio.run(service.serve()) == 1


def test_service_second_sigint_forces_the_stop(tmp_path: Path) -> None:
    upgrade(sqlite_url(tmp_path))
    service = Service(Config(database_url=sqlite_url(tmp_path)), consume=False, serve_http=False)

    async def interrupt_twice() -> None:
        while not service.metrics.ready:
            await asyncio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    async def scenario() -> int:
        interrupter = asyncio.create_task(interrupt_twice())
        code = await service.serve()
        await interrupter
        return code

    before = signal.getsignal(signal.SIGINT)
    assert asyncio.run(scenario()) == 0
    assert service.should_exit and service.force_exit
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def owned_by_alice() -> fm_message.Message:
    """A bundled sample about a package the bundled ownership file gives alice."""
    from importlib.resources import files

    from fmn_core.messages import facts_of, parse_line

    for line in (files("fmn_daemon.samples") / "messages.jsonl").read_text().splitlines():
        sample = parse_line(line)
        if "annobin" in facts_of(sample).packages:
            return type(sample)(body=sample.body, topic=sample.topic)
    raise AssertionError("no sample about annobin")


def publish_message(broker: RabbitMQ, message: fm_message.Message) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        connection.channel().basic_publish(
            broker.exchange, message.topic, message._encoded_body, message._properties
        )
    finally:
        connection.close()


def publish(broker: RabbitMQ, count: int) -> list[str]:
    import pika

    ids = []
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        channel = connection.channel()
        for n in range(count):
            message = fm_message.Message(topic=f"org.fedoraproject.test.koji.n{n}", body={"n": n})
            ids.append(message.id)
            channel.basic_publish(
                broker.exchange, message.topic, message._encoded_body, message._properties
            )
    finally:
        connection.close()
    return ids


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_service_sigterm_stops_cleanly_with_systemd_notifications(
    tmp_path: Path, rabbitmq: RabbitMQ, notify_socket: tuple[str, NotifySocket]
) -> None:
    """``fmn-daemon run`` as systemd runs it: READY, WATCHDOG, then SIGTERM → STOPPING, exit 0."""
    path, listener = notify_socket
    url = sqlite_url(tmp_path)
    upgrade(url)
    port = free_port()
    config = write_fmn_config(
        tmp_path / "fmn.toml",
        url,
        f"[http]\nport = {port}\n[delivery]\nshutdown_grace_seconds = 3.0\n",
    )
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000", PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    log_file = tmp_path / "daemon.log"
    with log_file.open("w") as log_handle:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fmn_daemon.cli",
                "--config",
                str(config),
                "run",
                "--fedora-messaging-config",
                str(rabbitmq.config_path),
            ],
            env=env,
            stderr=log_handle,
        )
    try:
        listener.collect("READY=1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            assert response.status == 200
        seen = len(listener.received)
        listener.collect("WATCHDOG=1")
        listener.collect("WATCHDOG=1")  # it keeps ticking
        assert len(listener.received) >= seen + 2

        ids = publish(rabbitmq, 100)
        time.sleep(0.3)
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        listener.collect("STOPPING=1")
        code = daemon.wait(timeout=15)
        took = time.monotonic() - stopping
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    stderr = log_file.read_text()
    assert code == 0, stderr
    assert took < 3.0 + 5.0, f"took {took:.1f}s to stop"
    assert "received SIGTERM; stopping" in stderr and "stopped" in stderr
    assert "Traceback" not in stderr
    # Nothing lost: every message is stored (committed and acked) or back in the queue.
    from fmn_core.db import Database
    from fmn_core.models import StoredMessage

    db = Database(Config(database_url=url))
    try:
        with db.begin() as session:
            stored = {
                m
                for m in session.scalars(
                    StoredMessage.__table__.select().with_only_columns(StoredMessage.id)
                )
            }
    finally:
        db.dispose()
    assert stored <= set(ids)
    assert len(stored) + rabbitmq.queue_depth() == len(ids)
    assert json.dumps(len(stored))  # how many made it is timing; that none vanished is the point


def test_systemd_unit_is_notify_with_watchdog_and_hardening() -> None:
    import configparser
    import shutil
    from importlib.resources import files

    unit = files("fmn_daemon") / "fmn-daemon.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"].rstrip("s")) >= 10
    assert "fmn-daemon" in service["ExecStart"] and service["ExecStart"].endswith(" run")
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    # systemd-analyze, where present, finds nothing wrong but the missing binary.
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        done = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        problems = [line for line in done.stderr.splitlines() if "/usr/bin/fmn-daemon" not in line]
        assert problems == []


@pytest.mark.parametrize("unit_name", ["fmn-daemon.service", "fmn-gateway.service"])
def test_systemd_does_not_restart_a_daemon_whose_settings_are_wrong(
    tmp_path: Path, unit_name: str
) -> None:
    # A wrong setting, restarted every few seconds, would fill the journal for ever;
    # a database that is down is worth retrying. The unit tells them apart by the
    # exit status the command really gives.
    import configparser
    from importlib.resources import files

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((files("fmn_daemon") / unit_name).read_text())
    service = parser["Service"]
    assert service["Restart"] == "on-failure"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    command = service["ExecStart"].split(" --config /etc/fmn/fmn.toml ")[1].split()
    command = [c.replace("/run/fmn/", f"{tmp_path}/") for c in command]

    def exit_status(config: str) -> int:
        path = tmp_path / "fmn.toml"
        path.write_text(config)
        env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "fmn-daemon"), "--config", str(path), *command],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode

    assert exit_status("[delivery]\nbatch_size = 0\n") in prevented
    assert exit_status("[delivery]\nbatchsize = 10\n") in prevented
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/fmn"
    assert exit_status(f'database_url = "{closed}"\n') not in prevented | {0}


@pytest.mark.rabbitmq
def test_service_loads_ownership_and_matches_package_owners(
    tmp_path: Path, rabbitmq: RabbitMQ
) -> None:
    """With ``ownership.source`` set, the service loads it and the matcher uses it at once."""
    from importlib.resources import files

    from sqlalchemy import func, select

    from fmn_core import preferences
    from fmn_core.config import DeliveryConfig, OwnershipConfig
    from fmn_core.db import Database
    from fmn_core.models import Notification, PackageOwner
    from fmn_core.preferences import Actor

    url = sqlite_url(tmp_path)
    upgrade(url)
    source = str(files("fmn_daemon.samples") / "ownership.json")
    config = Config(
        database_url=url,
        ownership=OwnershipConfig(source=source),
        delivery=DeliveryConfig(shutdown_grace_seconds=2.0),
    )
    db = Database(config)
    with db.begin() as session:
        preferences.add_filter(session, Actor("alice"), "email", "mine")
        preferences.add_rule(session, Actor("alice"), "email", "mine", "package_owned_by_me", {})
    service = Service(config, rabbitmq.config_path, deliver=False, serve_http=False)

    def scalar(statement: object) -> int:
        with db.begin() as session:
            return int(session.scalar(statement) or 0)

    def scenario_checks() -> None:
        deadline = time.monotonic() + 30
        while scalar(select(func.count()).select_from(PackageOwner)) == 0:
            assert time.monotonic() < deadline, "ownership never loaded"
            time.sleep(0.1)
        while scalar(select(func.count()).select_from(Notification)) == 0:
            # Until the writer reloaded ownership, a message may match no one: try again.
            assert time.monotonic() < deadline, "no notification for alice's package"
            publish_message(rabbitmq, owned_by_alice())
            time.sleep(0.5)

    try:
        assert serve_during(service, scenario_checks) == 0
    finally:
        db.dispose()


def test_freed_memory_is_returned_through_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, int]] = []

    class Libc:
        def __init__(self, name: str | None) -> None:
            self.name = name

        def malloc_trim(self, pad: int) -> int:
            calls.append((self.name, pad))
            return 1

    monkeypatch.setattr("ctypes.CDLL", Libc)
    service_module._return_freed_memory()
    assert calls == [(None, 0)]


def test_freed_memory_without_malloc_trim_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    class Musl:
        def __init__(self, name: str | None) -> None:
            pass

    monkeypatch.setattr("ctypes.CDLL", Musl)
    service_module._return_freed_memory()  # no malloc_trim: nothing to do, nothing raised
