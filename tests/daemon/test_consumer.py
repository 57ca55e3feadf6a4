"""The batched consumer against a real RabbitMQ: store, match, commit, then ack."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from fedora_messaging import message as fm_message
from sqlalchemy import func, select, text

from fmn_core.config import Config, IngestConfig
from fmn_core.db import Database
from fmn_core.models import ChangeEvent, Notification, StoredMessage, User
from fmn_core.schema import upgrade
from fmn_daemon.consumer import (
    BrokerSettings,
    Consumer,
    is_transient,
    load_broker_settings,
    prefetch_for,
    writers_for,
)
from fmn_daemon.metrics import Metrics

from .conftest import RabbitMQ, publish
from .test_ingest import add_filter

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A committed SQLite database at the newest schema (the consumer runs its own transactions)."""
    url = f"sqlite:///{tmp_path / 'consumer.sqlite'}"
    upgrade(url)
    db = Database(Config(database_url=url))
    try:
        yield db
    finally:
        db.dispose()


def koji(n: int = 0) -> fm_message.Message:
    message = fm_message.Message(
        topic="org.fedoraproject.test.koji.build.done", body={"build": n, "owner": "someone"}
    )
    message.id = f"test-{uuid.uuid4()}"
    return message


def count(db: Database, model: type[object]) -> int:
    with db.begin() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Running:
    """A consumer running in its thread, as the service runs it."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=consumer.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def halt(self, timeout: float = 15.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the consumer did not stop"


@pytest.fixture
def start(database: Database, rabbitmq: RabbitMQ) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def starter(
        broker: BrokerSettings | None = None, *, metrics: Metrics | None = None, **kwargs: Any
    ) -> Running:
        settings = broker or load_broker_settings(rabbitmq.config_path)
        consumer = Consumer(
            database,
            settings,
            metrics or Metrics(),
            backoff_initial=0.1,
            backoff_max=0.5,
            **kwargs,
        )
        consumer.load_matcher()
        consumer.connect()
        run = Running(consumer)
        running.append(run)
        return run

    yield starter
    for run in running:
        run.halt()


def test_load_broker_settings_reads_fedora_messaging_config(rabbitmq: RabbitMQ) -> None:
    settings = load_broker_settings(rabbitmq.config_path)
    assert settings.amqp_url == rabbitmq.amqp_url
    assert list(settings.queues) == [rabbitmq.queue]
    assert settings.bindings[0]["exchange"] == rabbitmq.exchange
    assert settings.prefetch_count == 1000
    assert "guest" not in settings.masked_url()


def test_load_broker_settings_refuses_unknown_keys(tmp_path: Path) -> None:
    from fmn_core.errors import ConfigError

    bad = tmp_path / "fm.toml"
    bad.write_text("amqp_url = 'amqp://'\nbogus_key = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bogus_key"):
        load_broker_settings(bad)


def test_consumer_stores_matches_commits_then_acks(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
        add_filter(session, "alice", [("app_is", {"app": "koji"})], context="rss")
    metrics = Metrics()
    run = start(metrics=metrics)
    messages = [koji(n) for n in range(300)]

    publish(rabbitmq, messages)

    wait_until(lambda: count(database, Notification) == 600)
    wait_until(lambda: metrics.get("batches") >= 2)
    run.halt()
    assert count(database, StoredMessage) == 300
    assert rabbitmq.queue_depth() == 0  # everything was acked
    assert metrics.get("messages_in") == 300
    assert metrics.get("notifications_created") == 600
    with database.begin() as session:
        stored = session.get(StoredMessage, messages[7].id)
        assert stored is not None and stored.body == {"build": 7, "owner": "someone"}
        assert stored.headers["fedora_messaging_schema"] == "base.message"


def test_consumer_drops_malformed_deliveries_with_a_count(
    database: Database,
    rabbitmq: RabbitMQ,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    start(metrics=metrics)
    good = koji()
    rabbitmq.publish_raw(b"{definitely not json", message_id="bad-json")
    rabbitmq.publish_raw(b"\xff\xfe\x00", message_id="bad-bytes")
    rabbitmq.publish_raw(
        json.dumps({}).encode(),
        headers={"fedora_messaging_schema": "bodhi.update.comment.v1"},
        message_id="bad-schema",
    )
    rabbitmq.publish_raw(b"[1, 2]", message_id="bad-shape")
    rabbitmq.publish_raw(json.dumps({"x": 1}).encode(), message_id="")
    publish(rabbitmq, [good])

    wait_until(
        lambda: count(database, StoredMessage) == 1 and metrics.get("messages_malformed") == 5
    )
    wait_until(lambda: rabbitmq.queue_depth() == 0)
    for ident in ("bad-json", "bad-bytes", "bad-schema", "bad-shape", "(no id)"):
        lines = [r.getMessage() for r in caplog.records if ident in r.getMessage()]
        assert len(lines) == 1 and "malformed" in lines[0]


def test_consumer_never_acks_what_it_could_not_commit(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    # The database breaks: the messages table is gone.
    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages RENAME TO messages_away"))
    metrics = Metrics()
    run = start(metrics=metrics)
    messages = [koji(n) for n in range(20)]
    publish(rabbitmq, messages)

    wait_until(lambda: metrics.get("db_errors") >= 3)
    assert run.thread.is_alive()  # an outage never ends the consumer
    assert metrics.ready is False
    run.halt()
    assert rabbitmq.queue_depth() == 20  # nothing acked: all back in the queue

    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages_away RENAME TO messages"))
    start()
    wait_until(lambda: count(database, Notification) == 20)
    wait_until(lambda: rabbitmq.queue_depth() == 0)
    assert count(database, StoredMessage) == 20


def test_consumer_recovers_when_the_database_comes_back_while_running(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE notifications RENAME TO notifications_away"))
    metrics = Metrics()
    start(metrics=metrics)
    publish(rabbitmq, [koji(n) for n in range(5)])
    wait_until(lambda: metrics.get("db_errors") >= 2)
    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE notifications_away RENAME TO notifications"))
    wait_until(lambda: count(database, Notification) == 5)
    wait_until(lambda: rabbitmq.queue_depth() == 0)


def test_consumer_picks_up_preference_changes_within_seconds(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    start(changes_interval=0.2)
    publish(rabbitmq, [koji()])
    wait_until(lambda: count(database, StoredMessage) == 1)
    assert count(database, Notification) == 0

    with database.begin() as session:  # what the preference service writes
        add_filter(session, "bob", [("app_is", {"app": "koji"})])
        session.add(
            ChangeEvent(
                user_id=session.scalar(select(User.id).where(User.name == "bob")), kind="test"
            )
        )
    time.sleep(0.6)
    publish(rabbitmq, [koji()])
    wait_until(lambda: count(database, Notification) == 1)


class FlakyProxy:
    """A TCP proxy to the broker whose connections can be cut, as a network would."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets = []

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_consumer_reconnects_after_losing_the_broker(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    params = pika.URLParameters(rabbitmq.amqp_url)
    proxy = FlakyProxy((params.host, params.port))
    try:
        settings = load_broker_settings(rabbitmq.config_path)
        proxied = BrokerSettings(
            amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
            exchanges=settings.exchanges,
            queues=settings.queues,
            bindings=settings.bindings,
        )
        metrics = Metrics()
        run = start(proxied, metrics=metrics)
        publish(rabbitmq, [koji(1)])
        wait_until(lambda: count(database, Notification) == 1)

        proxy.cut()
        publish(rabbitmq, [koji(2), koji(3)])
        wait_until(lambda: proxy.accepted >= 2)  # it came back by itself
        wait_until(lambda: count(database, Notification) == 3)
        wait_until(lambda: rabbitmq.queue_depth() == 0)
        assert run.thread.is_alive()
    finally:
        proxy.close()


def test_consumer_asks_for_an_ownership_refresh_on_acl_changes(
    database: Database, rabbitmq: RabbitMQ, start: Callable[..., Running]
) -> None:
    asked = threading.Event()
    start(on_ownership_change=asked.set)
    acl = fm_message.Message(
        topic="org.fedoraproject.prod.pagure.project.user.added",
        body={"project": {"namespace": "rpms", "name": "kernel"}, "new_user": "alice"},
    )
    publish(rabbitmq, [koji()])
    wait_until(lambda: count(database, StoredMessage) == 1)
    assert not asked.is_set()
    publish(rabbitmq, [acl])
    assert asked.wait(10)


def test_is_transient_sorts_database_errors() -> None:
    from sqlalchemy import exc

    assert is_transient(exc.OperationalError("s", {}, Exception("connection refused")))
    assert is_transient(exc.InterfaceError("s", {}, Exception("connection closed")))
    assert is_transient(ConnectionRefusedError())
    invalidated = exc.DBAPIError("s", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(invalidated)
    assert not is_transient(exc.DataError("s", {}, Exception("value too long")))
    assert not is_transient(exc.IntegrityError("s", {}, Exception("fk")))
    # Not "unreachable": isolated per message. A missing table still loses nothing,
    # because recording the dead message fails too and is retried (see test_dead_*).
    assert not is_transient(exc.ProgrammingError("s", {}, Exception("no such table")))
    # Issue 10: these used to count as outages and block the queue forever.
    assert not is_transient(RecursionError("maximum recursion depth exceeded"))
    assert not is_transient(ValueError("Out of range float values are not JSON compliant"))
    assert not is_transient(RuntimeError("bug"))


@pytest.mark.postgres
def test_consumer_drops_only_the_message_the_database_refuses(
    empty_postgres_url: str, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses a NUL in text: that message alone is dropped, its batch goes on."""
    upgrade(empty_postgres_url)
    db = Database(Config(database_url=empty_postgres_url))
    try:
        with db.begin() as session:
            add_filter(session, "alice", [("app_is", {"app": "koji"})])
        metrics = Metrics()
        consumer = Consumer(
            db,
            load_broker_settings(rabbitmq.config_path),
            metrics,
            backoff_initial=0.1,
            backoff_max=0.5,
            batch_wait=0.5,
        )
        consumer.load_matcher()
        consumer.connect()
        good = [koji(n) for n in range(5)]
        rabbitmq.publish_raw(
            b'{"n": 99}',
            routing_key="org.fedoraproject.test.koji.bad\x00key",
            message_id="poison-1",
        )
        publish(rabbitmq, good)
        run = Running(consumer)
        try:
            wait_until(lambda: count(db, Notification) == 5)
            wait_until(lambda: rabbitmq.queue_depth() == 0)
        finally:
            run.halt()
        assert metrics.get("messages_malformed") == 1
        assert count(db, StoredMessage) == 5
        refused = [r.getMessage() for r in caplog.records if "poison-1" in r.getMessage()]
        # Refused before the database sees it (issue 10): one line, no failed batch.
        assert len(refused) == 1, refused
        assert "dropped: the topic contains a NUL character" in refused[0]
        assert metrics.get("db_errors") == 0
    finally:
        db.dispose()


def test_consuming_raises_the_young_collection_threshold_and_never_lowers_it() -> None:
    import gc

    from fmn_daemon.consumer import YOUNG_GC_THRESHOLD, _tune_collector

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        _tune_collector()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, 10, 10)
        gc.set_threshold(YOUNG_GC_THRESHOLD * 5, 7, 3)
        _tune_collector()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD * 5, 7, 3)
        gc.set_threshold(0, 10, 10)  # switched off by whoever runs the process: left so
        _tune_collector()
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*saved)


def test_the_consumer_batches_up_to_ingest_batch_size_not_the_senders(tmp_path: Path) -> None:
    from fmn_core.config import DeliveryConfig, IngestConfig

    config = Config(
        database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}",
        ingest=IngestConfig(batch_size=7),
        delivery=DeliveryConfig(batch_size=3),
    )
    db = Database(config)
    try:
        broker = BrokerSettings(
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", exchanges={}, queues={}, bindings=()
        )
        assert Consumer(db, broker, Metrics()).batch_size == 7
        assert Consumer(db, broker, Metrics(), batch_size=2).batch_size == 2
    finally:
        db.dispose()


class _TimerRecorder:
    """The two timer calls ``Consumer._arm_tick`` makes on a ``BlockingConnection``."""

    def __init__(self) -> None:
        self.armed: dict[int, float] = {}
        self.removed: list[int] = []

    def call_later(self, delay: float, _callback: Callable[[], None]) -> int:
        timer = len(self.armed) + len(self.removed) + 1
        self.armed[timer] = delay
        return timer

    def remove_timeout(self, timer: int) -> None:
        self.removed.append(timer)
        del self.armed[timer]


def test_the_amqp_thread_keeps_one_timer_and_sets_it_again_only_to_fire_sooner(
    tmp_path: Path,
) -> None:
    db = Database(Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}"))
    try:
        broker = BrokerSettings(
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", exchanges={}, queues={}, bindings=()
        )
        consumer = Consumer(db, broker, Metrics())
        connection: Any = _TimerRecorder()
        consumer._arm_tick(connection, 10.25, 10.0)
        assert connection.armed == {1: 0.25}
        consumer._arm_tick(connection, 10.26, 10.01)  # later: the armed timer will do
        consumer._arm_tick(connection, 10.25, 10.02)
        assert connection.armed == {1: 0.25} and connection.removed == []
        consumer._arm_tick(connection, 10.08, 10.03)  # sooner (a delivery waits): moved
        assert connection.removed == [1] and connection.armed == {2: pytest.approx(0.05)}
        consumer._on_tick()  # fired: the next due time is armed, whatever it is
        consumer._arm_tick(connection, 10.33, 10.08)
        assert connection.armed == {2: pytest.approx(0.05), 3: pytest.approx(0.25)}
        assert connection.removed == [1]
    finally:
        db.dispose()


def test_a_delivery_the_busy_writer_cannot_take_is_handed_over_after_batch_wait(
    database: Database, rabbitmq: RabbitMQ
) -> None:
    # Nothing else arrives to wake the AMQP thread: its own timer must, batch_wait
    # after the delivery, not at the idle wake-up (a quarter of a second).
    release = threading.Event()
    arrived: list[float] = []

    class SlowWriter(Consumer):
        def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
            arrived.append(time.monotonic())
            super()._on_message(channel, method, properties, body)

        def _write(self, item: Any) -> None:
            release.wait(15)
            super()._write(item)

    # One writer, so that the writer holding the first batch is every writer there is.
    consumer = SlowWriter(
        database,
        load_broker_settings(rabbitmq.config_path),
        Metrics(),
        batch_wait=0.02,
        writers=1,
    )
    consumer.load_matcher()
    consumer.connect()
    run = Running(consumer)
    try:
        publish(rabbitmq, [koji(0)])
        wait_until(lambda: len(arrived) == 1 and consumer._writer_idle is False)
        time.sleep(0.3)  # the writer holds the first batch; the AMQP thread is idle again
        publish(rabbitmq, [koji(1)])
        wait_until(lambda: consumer._work.qsize() == 1, timeout=5)
        handed_over = time.monotonic()
        assert len(arrived) == 2
        assert handed_over - arrived[1] < 0.2
    finally:
        release.set()
        run.halt()
    assert count(database, StoredMessage) == 2


class _Recording(Consumer):
    """Records when each delivery arrived and when, and how many, were handed over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: list[float] = []
        self.handed_over: list[tuple[float, int]] = []

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.arrived.append(time.monotonic())
        super()._on_message(channel, method, properties, body)

    def _hand_over(self, *, block: bool) -> None:
        self.handed_over.append((time.monotonic(), min(len(self._pending), self.batch_size)))
        super()._hand_over(block=block)

    @classmethod
    def started(
        cls, database: Database, rabbitmq: RabbitMQ, linger: float
    ) -> tuple[_Recording, Running]:
        """A recording consumer with ``linger``, its matcher loaded, running."""
        consumer = cls(
            database, load_broker_settings(rabbitmq.config_path), Metrics(), linger=linger
        )
        consumer.load_matcher()
        consumer.connect()
        return consumer, Running(consumer)


def test_a_lone_delivery_after_a_quiet_spell_is_handed_over_at_once(
    database: Database, rabbitmq: RabbitMQ
) -> None:
    # A linger far longer than a hand-over takes: had either delivery been held,
    # it would show.
    linger = 0.5
    consumer, run = _Recording.started(database, rabbitmq, linger)
    try:
        publish(rabbitmq, [koji(0)])
        wait_until(lambda: len(consumer.handed_over) == 1)
        time.sleep(linger + 0.2)  # quiet for longer than the linger
        publish(rabbitmq, [koji(1)])
        wait_until(lambda: len(consumer.handed_over) == 2)
    finally:
        run.halt()
    assert [size for _, size in consumer.handed_over] == [1, 1]
    for arrived, (handed_over, _) in zip(consumer.arrived, consumer.handed_over, strict=True):
        assert handed_over - arrived < linger / 2
    assert count(database, StoredMessage) == 2


def test_deliveries_close_behind_a_batch_are_held_for_the_linger_and_go_together(
    database: Database, rabbitmq: RabbitMQ
) -> None:
    linger = 1.0
    consumer, run = _Recording.started(database, rabbitmq, linger)
    try:
        # The first finds the writer idle after a quiet spell and goes at once; the
        # five published right after its hand-over (one connection, a millisecond
        # or two apart) are gathered into one batch.
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for n in range(6):
                message = koji(n)
                channel.basic_publish(
                    rabbitmq.exchange,
                    message._encoded_routing_key,
                    message._encoded_body,
                    message._properties,
                )
                if n == 0:
                    wait_until(lambda: len(consumer.handed_over) == 1, timeout=linger / 2)
        finally:
            connection.close()
        wait_until(lambda: sum(size for _, size in consumer.handed_over) == 6)
        wait_until(lambda: count(database, StoredMessage) == 6)
    finally:
        run.halt()
    assert [size for _, size in consumer.handed_over] == [1, 5]
    (first, _), (second, _) = consumer.handed_over
    assert first - consumer.arrived[0] < linger / 2
    # Held, but no delivery longer than the linger (and the time to read and decode).
    assert second - consumer.arrived[1] >= linger * 0.9
    assert all(second - arrived < linger + 0.2 for arrived in consumer.arrived[1:])
    assert count(database, StoredMessage) == 6


def test_the_linger_can_be_switched_off(database: Database, rabbitmq: RabbitMQ) -> None:
    consumer, run = _Recording.started(database, rabbitmq, linger=0)
    try:
        publish(rabbitmq, [koji(n) for n in range(6)])
        wait_until(lambda: count(database, StoredMessage) == 6)
    finally:
        run.halt()
    # Held until its own arrival, no later (``arrived`` is noted just before the consumer
    # reads the clock for the same delivery).
    assert consumer._hold_until - consumer.arrived[-1] < 0.001
    assert all(handed_over - consumer.arrived[0] < 0.25 for handed_over, _ in consumer.handed_over)


def test_the_consumer_runs_one_writer_on_sqlite_and_asks_a_prefetch_for_its_writers(
    database: Database, rabbitmq: RabbitMQ
) -> None:
    broker = load_broker_settings(rabbitmq.config_path)
    assert broker.prefetch_count == 1000
    # SQLite takes one writing transaction at a time: ``ingest.writers`` is for PostgreSQL.
    assert writers_for(database) == 1
    consumer = Consumer(database, broker, Metrics())
    assert (consumer.writers, consumer.prefetch_count) == (1, 1000)
    # Two batches unacked per writer: the configured prefetch, or more.
    assert Consumer(database, broker, Metrics(), writers=2).prefetch_count == 2000
    assert Consumer(database, broker, Metrics(), writers=3, batch_size=100).prefetch_count == 1000
    assert prefetch_for(broker, 700, 2) == 2800


@pytest.mark.postgres
def test_writers_side_by_side_store_every_message_once_and_ack_in_order(
    empty_postgres_url: str, rabbitmq: RabbitMQ
) -> None:
    """On PostgreSQL two writers commit batches side by side. A batch committed while an
    older one is still being written is acked only with it: an ack covers every delivery
    before its tag, and the older batch is not committed yet."""
    upgrade(empty_postgres_url)
    db = Database(Config(database_url=empty_postgres_url))
    release = threading.Event()
    writers: set[str] = set()
    acks: list[tuple[str, int | None]] = []

    class Recording(Consumer):
        def _write(self, item: Any) -> None:
            writers.add(threading.current_thread().name)
            if item.decoded and item.decoded[0][1].id == held.id:
                release.wait(15)
            super()._write(item)

        def _ack(self, item: Any, first: str, last: str) -> int | None:
            tag = super()._ack(item, first, last)
            acks.append((first, tag))
            return tag

    try:
        assert writers_for(db) == 2  # ``ingest.writers``' default
        with db.begin() as session:
            add_filter(session, "alice", [("app_is", {"app": "koji"})])
        consumer = Recording(db, load_broker_settings(rabbitmq.config_path), Metrics())
        assert consumer.prefetch_count == 2000
        consumer.load_matcher()
        consumer.connect()
        run = Running(consumer)
        try:
            held, overtaking = koji(0), koji(1)
            publish(rabbitmq, [held])
            wait_until(lambda: len(writers) == 1)
            publish(rabbitmq, [overtaking])
            wait_until(lambda: count(db, StoredMessage) == 1)
            wait_until(lambda: len(acks) == 1)
            # The second batch is committed, and not acked: the first one is not.
            assert acks == [(overtaking.id, None)]
            release.set()
            wait_until(lambda: len(acks) == 2)
            assert acks[1] == (held.id, 2)  # one ack for both deliveries
            # Then a burst, many batches written by both writers at once.
            burst = [koji(n) for n in range(2, 402)]
            publish(rabbitmq, burst)
            wait_until(lambda: count(db, Notification) == 402, timeout=30)
        finally:
            release.set()
            run.halt()
        assert len(writers) == 2
        assert count(db, StoredMessage) == 402
        assert rabbitmq.queue_depth() == 0  # everything was acked before the connection closed
    finally:
        db.dispose()


def test_a_batch_a_writer_fails_on_is_acked_so_the_later_ones_are_too(
    database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug outside any one message leaves its batch logged, and acked: acks go in order,
    so an unacked batch would hold back every ack after it."""
    broken = koji(0)

    class Buggy(Consumer):
        def _write(self, item: Any) -> None:
            if any(facts.id == broken.id for _, facts in item.decoded):
                raise RuntimeError("a bug in the writer")
            super()._write(item)

    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    consumer = Buggy(database, load_broker_settings(rabbitmq.config_path), Metrics())
    consumer.load_matcher()
    consumer.connect()
    run = Running(consumer)
    try:
        publish(rabbitmq, [broken])
        wait_until(lambda: any("internal error" in r.getMessage() for r in caplog.records))
        later = [koji(n) for n in range(1, 31)]
        publish(rabbitmq, later)
        wait_until(lambda: count(database, Notification) == 30)
    finally:
        run.halt()
    assert count(database, StoredMessage) == 30
    assert rabbitmq.queue_depth() == 0  # the later batches were acked before the connection closed


def test_bodies_held_past_max_inflight_bytes_pause_the_consumer_until_committed(
    tmp_path: Path, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefetch bounds how many deliveries are held, not their size: large bodies
    beyond ``ingest.max_inflight_bytes`` stay in the broker while the writer is behind,
    and every one of them is stored once it catches up."""
    caplog.set_level(logging.INFO, logger="fmn_daemon.consumer")
    url = f"sqlite:///{tmp_path / 'inflight.sqlite'}"
    upgrade(url)
    limit = 1024 * 1024
    db = Database(Config(database_url=url, ingest=IngestConfig(max_inflight_bytes=limit)))
    release = threading.Event()
    held: list[int] = []

    class Slow(Consumer):
        def _write(self, item: Any) -> None:
            release.wait(15)
            super()._write(item)

        def _on_message(self, *args: Any) -> None:
            super()._on_message(*args)
            held.append(self._inflight)

    big = []
    for n in range(30):
        message = fm_message.Message(
            topic="org.fedoraproject.test.big.upload", body={"n": n, "pad": "x" * 100_000}
        )
        message.id = f"big-{uuid.uuid4()}"
        big.append(message)
    metrics = Metrics()
    consumer = Slow(db, load_broker_settings(rabbitmq.config_path), metrics)
    assert consumer.prefetch_count >= len(big)  # the count alone would let all in
    try:
        consumer.load_matcher()
        consumer.connect()
        run = Running(consumer)
        try:
            publish(rabbitmq, big)
            wait_until(lambda: metrics.get("ingest_pauses") == 1)
            time.sleep(0.5)  # anything still on its way would arrive meanwhile
            # One delivery crosses the bound, and none after it is taken.
            assert limit < max(held) < limit + 110_000
            assert len(held) < len(big)
            assert rabbitmq.queue_depth() == len(big) - len(held)
            assert "ingest.max_inflight_bytes" in caplog.text
            release.set()
            wait_until(lambda: count(db, StoredMessage) == len(big))
            wait_until(lambda: rabbitmq.queue_depth() == 0)
        finally:
            release.set()
            run.halt()
        assert metrics.get("ingest_pauses") >= 1
        assert count(db, StoredMessage) == len(big)
        assert "taking deliveries again" in caplog.text
        assert max(held) < limit + 110_000
    finally:
        db.dispose()


def test_load_broker_settings_refuses_a_named_file_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fedora-messaging would run on its defaults (localhost, a throwaway queue).
    from fmn_core.errors import ConfigError

    for path in (tmp_path / "nope.toml", tmp_path):
        with pytest.raises(ConfigError, match=f"cannot read {path}"):
            load_broker_settings(path)
    monkeypatch.setenv("FEDORA_MESSAGING_CONF", str(tmp_path / "typo.toml"))
    with pytest.raises(ConfigError, match="FEDORA_MESSAGING_CONF"):
        load_broker_settings()


def test_load_broker_settings_refuses_a_url_that_is_not_amqp(tmp_path: Path) -> None:
    from fmn_core.errors import ConfigError

    bad = tmp_path / "fm.toml"
    bad.write_text("amqp_url = 'http://broker.example.org/'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="amqp:// or amqps://"):
        load_broker_settings(bad)
