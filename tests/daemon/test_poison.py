"""Issue 10, the bus side: one hostile delivery, row or line costs only itself.

Each case the issue found by attacking fmn is a named test here, run through the
real consumer against the real RabbitMQ (and PostgreSQL where it is the one that
refuses), the real senders and the real ``replay``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from core.test_outbox import add_notification, add_user, state_of
from sqlalchemy import select, text

from fmn_core.config import Config, DeliveryConfig, IngestConfig
from fmn_core.db import Database
from fmn_core.messages import facts_of
from fmn_core.models import DeadMessage, Notification, StoredMessage, utcnow
from fmn_core.schema import upgrade
from fmn_daemon import cli
from fmn_daemon.consumer import AmqpDelivery, Consumer, _Batch, load_broker_settings
from fmn_daemon.dead_messages import list_dead_messages, requeue_dead_message
from fmn_daemon.delivery import Senders as Sender
from fmn_daemon.metrics import Metrics
from fmn_daemon.replay import replay
from fmn_daemon.transports.live import LiveHub

from .conftest import RabbitMQ, publish
from .test_consumer import Running, count, koji, wait_until
from .test_ingest import add_filter

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A committed SQLite database at the newest schema."""
    url = f"sqlite:///{tmp_path / 'poison.sqlite'}"
    upgrade(url)
    db = Database(Config(database_url=url))
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def pg_database(empty_postgres_url: str) -> Iterator[Database]:
    """A committed PostgreSQL database at the newest schema."""
    upgrade(empty_postgres_url)
    db = Database(Config(database_url=empty_postgres_url))
    try:
        yield db
    finally:
        db.dispose()


def nested(depth: int, leaf: str = '"x"') -> bytes:
    """A JSON object nested ``depth`` levels deep, built as text (no recursion)."""
    return ('{"a": ' * depth + leaf + "}" * depth).encode()


def consumer_for(db: Database, rabbitmq: RabbitMQ, metrics: Metrics) -> Consumer:
    consumer = Consumer(
        db,
        load_broker_settings(rabbitmq.config_path),
        metrics,
        backoff_initial=0.05,
        backoff_max=0.2,
        batch_wait=0.2,
    )
    consumer.load_matcher()
    return consumer


def lines_naming(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def run_between_valid(
    db: Database,
    rabbitmq: RabbitMQ,
    hostile: Any,
    *,
    valid: int = 3,
) -> tuple[Metrics, Running]:
    """Valid koji messages, the hostile delivery, more valid ones; wait until all are handled."""
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    metrics = Metrics()
    consumer = consumer_for(db, rabbitmq, metrics)
    consumer.connect()
    publish(rabbitmq, [koji(n) for n in range(valid)])
    hostile()
    publish(rabbitmq, [koji(n) for n in range(valid, 2 * valid)])
    run = Running(consumer)
    try:
        wait_until(lambda: count(db, Notification) == 2 * valid, timeout=30)
        wait_until(lambda: rabbitmq.queue_depth() == 0)
        assert run.thread.is_alive(), "the consumer died"
    finally:
        run.halt()
    return metrics, run


@pytest.mark.parametrize("depth", [10_000, 980, 988])
def test_consumer_refuses_a_deeply_nested_body_and_goes_on(
    database: Database,
    rabbitmq: RabbitMQ,
    caplog: pytest.LogCaptureFixture,
    depth: int,
) -> None:
    """10,000 levels killed the consumer; ~980 killed the senders; ~988 blocked the queue."""
    caplog.set_level(logging.INFO)
    poison = f"deep-{depth}-{uuid.uuid4().hex[:6]}"
    metrics, _ = run_between_valid(
        database, rabbitmq, lambda: rabbitmq.publish_raw(nested(depth), message_id=poison)
    )
    assert metrics.get("messages_malformed") == 1
    assert metrics.get("db_errors") == 0
    assert count(database, StoredMessage) == 6
    (line,) = lines_naming(caplog, poison)
    assert "malformed, dropped" in line and f"nested {depth} levels deep" in line
    assert "ingest.max_depth" in line


def publish_deep_headers(rabbitmq: RabbitMQ, message_id: str, depth: int) -> None:
    """Publish headers nested ``depth`` levels (pika's encoder recurses: another process)."""
    script = textwrap.dedent(
        f"""
        import sys, threading, pika
        sys.setrecursionlimit(100_000)
        threading.stack_size(512 * 1024 * 1024)
        def main():
            headers = "leaf"
            for _ in range({depth}):
                headers = {{"h": headers}}
            connection = pika.BlockingConnection(pika.URLParameters({rabbitmq.amqp_url!r}))
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(
                {rabbitmq.exchange!r}, {rabbitmq.routing_key!r}, b'{{"ok": true}}',
                pika.BasicProperties(message_id={message_id!r}, headers=headers,
                                     content_encoding="utf-8"),
            )
            connection.close()
        thread = threading.Thread(target=main)
        thread.start()
        thread.join()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_consumer_cuts_headers_nested_3000_levels_without_losing_its_connection(
    database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """pika's decoder used to hit RecursionError, drop the connection, and loop forever."""
    caplog.set_level(logging.INFO)
    poison = f"deep-headers-{uuid.uuid4().hex[:6]}"
    metrics, _ = run_between_valid(
        database, rabbitmq, lambda: publish_deep_headers(rabbitmq, poison, 3000)
    )
    assert metrics.get("messages_malformed") == 1
    (line,) = lines_naming(caplog, poison)
    assert "headers are nested more than 16 levels deep" in line
    assert not lines_naming(caplog, "lost the broker connection")


def test_consumer_lets_an_oversized_body_go_unread(
    database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    poison = f"huge-{uuid.uuid4().hex[:6]}"
    body = b'{"blob": "' + b"x" * (IngestConfig().max_body_bytes + 10) + b'"}'
    metrics, _ = run_between_valid(
        database, rabbitmq, lambda: rabbitmq.publish_raw(body, message_id=poison)
    )
    assert metrics.get("messages_malformed") == 1
    (line,) = lines_naming(caplog, poison)
    assert "ingest.max_body_bytes" in line


def test_consumer_logs_control_characters_in_id_and_topic_escaped(
    database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """An id or topic with CR/LF/ESC used to forge lines in the daemon's log."""
    caplog.set_level(logging.DEBUG)
    forged = "evil\r\n2026-12-05 INFO fmn: forged line\x1b[31m\x07"

    def hostile() -> None:
        # Malformed (not an object) so its id is logged; valid with a hostile topic too.
        rabbitmq.publish_raw(b"[1]", message_id=forged)
        rabbitmq.publish_raw(
            b'{"n": 1}', message_id=forged + "-2", routing_key="org.fedoraproject.test.koji\x1b.x"
        )

    run_between_valid(database, rabbitmq, hostile)
    for record in caplog.records:
        message = record.getMessage()
        assert not any(c in message for c in "\r\x1b\x07"), repr(message)
        assert "\n2026-12-05 INFO" not in message
    assert lines_naming(caplog, "evil\\r\\n2026-12-05")


def test_writer_puts_a_message_it_cannot_store_aside_as_dead(
    database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``RecursionError`` in ``json.dumps`` was taken for a database outage, forever."""
    caplog.set_level(logging.INFO)
    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    metrics = Metrics()
    consumer = consumer_for(database, rabbitmq, metrics)
    good = [koji(n) for n in range(4)]
    poison = koji(99)
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(5000):  # built past every bound, as a bug upstream might
        deep = {"a": deep}
    poison.body = deep
    items = []
    for tag, message in enumerate([good[0], good[1], poison, good[2], good[3]], start=1):
        properties = pika.BasicProperties(message_id=message.id, headers={})
        delivery = AmqpDelivery(tag, message.topic, properties, b'{"n": 1}')
        items.append((delivery, facts_of(message)))
    consumer._write(_Batch(0, [d for d, _ in items], items))
    assert count(database, StoredMessage) == 4
    assert count(database, Notification) == 4
    assert metrics.get("messages_dead") == 1
    with database.begin() as session:
        (dead,) = list_dead_messages(session)
    assert dead.message_id == poison.id
    assert dead.attempts == IngestConfig().max_attempts
    assert "RecursionError" in dead.reason
    (line,) = [m for m in lines_naming(caplog, poison.id) if "put aside" in m]
    assert "failed 3 times" in line
    assert len([m for m in lines_naming(caplog, poison.id)]) == 1


@pytest.mark.postgres
def test_consumer_buries_a_message_postgresql_keeps_refusing(
    pg_database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture
) -> None:
    """A body text PostgreSQL refuses (as a bug upstream might hand over): dead, the rest stored.

    Bodies are stored as the text they arrived in, which was parsed strictly, so
    no delivery from the bus gets here; the batch is handed to the writer as the
    AMQP thread would.
    """
    caplog.set_level(logging.INFO)
    with pg_database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    metrics = Metrics()
    consumer = consumer_for(pg_database, rabbitmq, metrics)
    good = [koji(n) for n in range(6)]
    poison = koji(99)
    items = []
    for tag, message in enumerate([*good[:3], poison, *good[3:]], start=1):
        text = "{not json" if message is poison else json.dumps(message.body)
        body = b'{"n": 1e999}' if message is poison else text.encode()
        properties = pika.BasicProperties(message_id=message.id, headers={})
        delivery = AmqpDelivery(tag, message.topic, properties, body)
        items.append((delivery, facts_of(message, body_json=text)))
    consumer._write(_Batch(0, [d for d, _ in items], items))
    assert metrics.get("messages_dead") == 1
    assert count(pg_database, StoredMessage) == 6
    with pg_database.begin() as session:
        (dead,) = session.scalars(select(DeadMessage)).all()
        assert dead.message_id == poison.id
        assert json.loads(dead.raw)["id"] == poison.id
        dead_id = dead.id
    assert len([m for m in lines_naming(caplog, poison.id) if "put aside" in m]) == 1
    # Requeued, it fails again and stays, with one more attempt.
    outcome = requeue_dead_message(pg_database, dead_id)
    assert not outcome.stored
    with pg_database.begin() as session:
        again = session.get(DeadMessage, dead_id)
        assert again is not None and again.attempts == IngestConfig().max_attempts + 1


@pytest.mark.postgres
@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1" * 400 + b".0"])
def test_consumer_refuses_a_number_beyond_a_float_on_arrival(
    pg_database: Database, rabbitmq: RabbitMQ, caplog: pytest.LogCaptureFixture, number: bytes
) -> None:
    """Python reads ``1e999`` as infinity, which no JSON encoder writes back: malformed."""
    caplog.set_level(logging.INFO)
    poison = f"infinite-{uuid.uuid4().hex[:6]}"
    metrics, _ = run_between_valid(
        pg_database,
        rabbitmq,
        lambda: rabbitmq.publish_raw(b'{"n": ' + number + b"}", message_id=poison),
    )
    assert metrics.get("messages_malformed") == 1
    assert metrics.get("messages_dead") == 0
    assert count(pg_database, StoredMessage) == 6
    (line,) = lines_naming(caplog, poison)
    assert "malformed, dropped" in line and "too large a number" in line


def test_dead_messages_are_listed_and_requeued_from_the_command_line(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmn_daemon.dead_messages import bury, delivery_line

    with database.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
        raw = delivery_line("m-1", "org.fedoraproject.test.koji.build.done", {}, b'{"n": 1}')
        dead_id = bury(
            session,
            message_id="m-1",
            topic="org.fedoraproject.test.koji.build.done",
            reason="OperationalError: the disk was full",
            attempts=3,
            raw=raw,
            limits=IngestConfig(),
        )
        bury(
            session,
            message_id="evil\x1b]0;title\x07",
            topic="t\r\nX-Forged: 1",
            reason="DataError",
            attempts=3,
            raw=b"{}" * 10,
            limits=IngestConfig(dead_copy_bytes=1024),
        )
    config = tmp_path / "fmn.toml"
    config.write_text(f"database_url = {json.dumps(str(database.engine.url))}\n")
    assert cli.main(["--config", str(config), "messages", "dead", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["message_id"] for row in listed} == {"m-1", "evil\\x1b]0;title\\x07"}
    assert all("\r" not in row["topic"] and "\n" not in row["topic"] for row in listed)
    assert cli.main(["--config", str(config), "outbox"]) == 0
    assert "2 dead bus messages" in capsys.readouterr().out
    assert cli.main(["--config", str(config), "messages", "requeue", str(dead_id)]) == 0
    assert "1 notifications written" in capsys.readouterr().out
    assert count(database, StoredMessage) == 1
    assert cli.main(["--config", str(config), "messages", "requeue", str(dead_id)]) == 2
    assert "no dead message" in capsys.readouterr().err


def test_sender_round_survives_a_stored_body_that_no_longer_decodes(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored body nested past the recursion limit used to kill every sender round."""
    caplog.set_level(logging.INFO)
    with db.begin() as session:
        user = add_user(session, "jo", "live", ("token-jo-0123456789abcdef",))
        good = add_notification(session, user, "live").id
        body = "[" * 5000 + "]" * 5000
        cast = "CAST(:body AS json)" if db.engine.dialect.name == "postgresql" else ":body"
        session.execute(
            text(
                "INSERT INTO messages (id, topic, body, headers, received_at) "
                f"VALUES ('deep-stored', 'org.fedoraproject.test.x', {cast}, '{{}}', :now)"
            ),
            {"body": body, "now": utcnow()},
        )
        row = Notification(
            message_id="deep-stored", user_id=user.id, context="live", filter_name="f"
        )
        session.add(row)
        session.flush()
        bad = row.id
    metrics = Metrics()
    config = db.config.replace(delivery=DeliveryConfig(senders=1))
    hub = LiveHub()
    sender = Sender(db, config, metrics, hub)
    asyncio.run(sender.drain(20))
    assert state_of(db, good).state == "sent"
    dead = state_of(db, bad)
    assert dead.state == "dead"
    assert dead.last_error is not None and "RecursionError" in dead.last_error
    assert metrics.get("notifications_dead") == 1
    assert len([r for r in caplog.records if f"row {bad} is dead" in r.getMessage()]) == 1


def test_replay_refuses_hostile_lines_and_keeps_the_rest(
    db: Database, tmp_path: Path, corpus: list[str]
) -> None:
    """No id, NaN, 10,000 levels: each costs its own line; before and after are stored."""
    good = [json.loads(line) for line in corpus[:6]]
    for n, message in enumerate(good):
        message["id"] = f"replay-good-{n}"
    nan_line = json.dumps(dict(good[0], id="nan-1", body={"x": float("nan")}))
    lines = [
        json.dumps(good[0]),
        json.dumps({k: v for k, v in good[1].items() if k != "id"}),
        json.dumps(good[2]),
        nan_line,
        json.dumps(good[3]),
        '{"id": "deep-1", "topic": "a.b", "body": ' + nested(10_000).decode() + "}",
        json.dumps(good[4]),
        json.dumps(dict(good[5], id=None)),
        json.dumps(good[5]),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = io.StringIO()
    stats = replay(db, path, out, dry_run=False, as_json=True, batch_size=100)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = {r["line"]: r["error"] for r in records if "error" in r}
    assert set(errors) == {2, 4, 6, 8}
    assert '"id"' in errors[2] and '"id"' in errors[8]
    assert "NaN" in errors[4]
    assert "nested" in errors[6]
    assert stats.errors == 4
    with db.begin() as session:
        stored = set(session.scalars(select(StoredMessage.id)))
    assert stored == {f"replay-good-{n}" for n in (0, 2, 3, 4, 5)}
    assert "None" not in stored


def test_replay_command_reports_hostile_lines_and_prints_its_summary(
    tmp_path: Path, corpus: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``fmn-daemon replay`` used to abort with "internal error" and lose the lines before."""
    url = f"sqlite:///{tmp_path / 'replay.sqlite'}"
    upgrade(url)
    config = tmp_path / "fmn.toml"
    config.write_text(f"database_url = {json.dumps(url)}\n")
    first, second = (json.loads(line) for line in corpus[:2])
    lines = [
        json.dumps(dict(first, id="before")),
        '{"id": "deep", "topic": "a.b", "body": ' + nested(10_000).decode() + "}",
        json.dumps(dict(first, id="nan", body={"x": float("nan")})),
        json.dumps({k: v for k, v in second.items() if k != "id"}),
        json.dumps(dict(second, id="after")),
    ]
    path = tmp_path / "messages.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert cli.main(["--config", str(config), "replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 unreadable lines" in out
    assert "2 messages" in out
    for number in (2, 3, 4):
        assert f"     {number}  error:" in out
    db = Database(Config(database_url=url))
    try:
        with db.begin() as session:
            assert set(session.scalars(select(StoredMessage.id))) == {"before", "after"}
    finally:
        db.dispose()


def test_sender_marks_a_row_it_cannot_render_dead_and_sends_the_others(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A message that can't be rendered (a bug, a hostile value) costs only its row."""
    import fmn_daemon.delivery as delivery_module

    with db.begin() as session:
        user = add_user(session, "jo", "live", ("token-jo-0123456789abcdef",))
        good = add_notification(session, user, "live").id
        bad = add_notification(session, user, "live").id
    real_render = delivery_module.render  # type: ignore[attr-defined]  # patched below

    def render(notification: Any, links: Any = None) -> Any:
        if notification.id == bad:
            raise RecursionError("maximum recursion depth exceeded")
        return real_render(notification, links)

    monkeypatch.setattr(delivery_module, "render", render)
    metrics = Metrics()
    # One sender: the PostgreSQL fixture shares one connection between sessions.
    config = db.config.replace(delivery=DeliveryConfig(senders=1))
    asyncio.run(Sender(db, config, metrics, LiveHub()).drain(20))
    assert state_of(db, good).state == "sent"
    row = state_of(db, bad)
    assert row.state == "dead" and "cannot be rendered: RecursionError" in (row.last_error or "")
    assert len([r for r in caplog.records if "cannot be rendered" in r.getMessage()]) == 1


def test_sender_run_survives_a_round_that_raises(
    committed: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A planning step that raises once costs no row: the group is planned again on its own."""
    from fmn_core import delivery_policy

    # ``run`` claims again while the live send's outcome is being committed (once a
    # commit takes longer than the poll interval, as on a loaded machine): two
    # threads at once, which the ``db`` fixture's one PostgreSQL connection can't serve.
    db = committed
    with db.begin() as session:
        user = add_user(session, "jo", "live", ("token-jo-0123456789abcdef",))
        row_id = add_notification(session, user, "live").id
    real_stats = delivery_policy.group_stats
    calls: list[int] = []

    def group_stats(session: Any, groups: Any, now: Any = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bug that happens once")
        return real_stats(session, groups, now=now)

    monkeypatch.setattr(delivery_policy, "group_stats", group_stats)
    config = db.config.replace(delivery=DeliveryConfig(senders=1, idle_poll_seconds=0.05))
    metrics = Metrics()
    sender = Sender(db, config, metrics, LiveHub())

    async def run_until_sent() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        # Watched through the counter, which goes up once the outcome is committed.
        for _ in range(200):
            await asyncio.sleep(0.05)
            if metrics.get("notifications_sent"):
                break
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(run_until_sent())
    assert state_of(db, row_id).state == "sent"
    assert len(calls) >= 2
