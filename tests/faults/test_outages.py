"""Transient outages: the broker, the database and the mail server go away and come back.

Each test runs ``fmn-daemon run`` as a subprocess, takes one service away while
messages are in flight, checks every second of the outage that the daemon is
still running (it must never exit by itself over a transient outage), brings
the service back, and then checks that everything was delivered and that the
outbox holds each expected ``(message, user, context)`` exactly once.

- RabbitMQ: a private node (its own name, ports and Mnesia directory) is stopped
  with ``rabbitmqctl stop`` and started again on the same data; the durable
  queue and its persistent messages survive.
- PostgreSQL: a private cluster is stopped in ``immediate`` mode (a crash: no
  checkpoint, connections cut) and started again (crash recovery).
- SMTP: the aiosmtpd server is stopped and started again on the same port.

The machine's shared PostgreSQL and RabbitMQ are never stopped.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from daemon.conftest import write_fedora_messaging_config
from sqlalchemy import create_engine, text

from .conftest import (
    count_rows,
    expected_recipients,
    fresh_messages,
    mails_by_message,
    outbox_rows,
    publish_messages,
    set_up_watcher,
    upgrade_schema,
    wait_for,
)

pytestmark = [pytest.mark.slow]

DELIVERY = """\
[delivery]
idle_poll_seconds = 0.2
claim_lease_seconds = 10
rate_limit_per_hour = 1000000
backoff_seconds = 1
backoff_max_seconds = 3
max_attempts = 200
shutdown_grace_seconds = 10
"""
OUTAGE_SECONDS = 8


def hold_down(daemon: Any, seconds: float) -> list[bool]:
    """Watch the daemon through an outage; ``/ready`` answers seen, one per second."""
    ready = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemon.alive(), f"the daemon exited during the outage:\n{daemon.output()[-4000:]}"
        ready.append(daemon.ready())
        time.sleep(1.0)
    return ready


def settle(url: str, expected: set[tuple[str, str, str]], stored: int, daemon: Any) -> None:
    """Wait until ``stored`` messages are in and every expected notification is sent."""

    def done() -> bool:
        if count_rows(url, "messages") < stored:
            return False
        rows = outbox_rows(url)
        return len(rows) >= len(expected) and all(r[3] == "sent" for r in rows)

    try:
        wait_for(done, timeout=90, what="every message stored and notified", interval=0.5)
    except AssertionError as exc:
        stacks = daemon.dump_stacks()
        raise AssertionError(f"{exc}; rows not sent: {stuck(url)}\n{stacks}") from None


def stuck(url: str) -> Counter[str]:
    return Counter(r[3] for r in outbox_rows(url) if r[3] != "sent")


def exactly_once(url: str, expected: set[tuple[str, str, str]]) -> dict[str, int]:
    rows = outbox_rows(url)
    keys = Counter((m, u, c) for m, u, c, _s, _a in rows)
    figures = {
        "expected_notifications": len(expected),
        "outbox_rows": len(rows),
        "lost": len(expected - set(keys)),
        "unexpected": len(set(keys) - expected),
        "outbox_duplicates": sum(n - 1 for n in keys.values()),
        "retried_rows": sum(1 for *_x, attempts in rows if attempts > 0),
    }
    return figures


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_outage_rabbitmq_restart_loses_nothing(
    empty_postgres_url: str,
    private_rabbitmq: Any,
    make_daemon: Any,
    figures: Any,
    tmp_path: Path,
) -> None:
    url = empty_postgres_url
    node = private_rabbitmq
    unique = uuid.uuid4().hex[:10]
    queue, exchange = f"fmn-faults-{unique}", f"fmn-faults-x-{unique}"
    fm_config = write_fedora_messaging_config(
        tmp_path / "fedora-messaging.toml", node.amqp_url, queue, exchange, ["#"]
    )
    upgrade_schema(url)
    set_up_watcher(url)
    before, during, after = (
        fresh_messages(150, p, i) for i, p in enumerate(("pre", "mid", "post"))
    )
    expected = expected_recipients(url, before + during + after)

    daemon = make_daemon(url, fm_config, extra=DELIVERY)
    daemon.start()
    publish_messages(node.amqp_url, exchange, before)
    wait_for(
        lambda: count_rows(url, "messages") >= len(before),
        timeout=60,
        what="the first messages stored",
    )
    # The next ones are still being taken in when the broker goes.
    publish_messages(node.amqp_url, exchange, during)
    stopped = time.monotonic()
    node.stop()
    ready_while_down = hold_down(daemon, OUTAGE_SECONDS)
    node.start()
    down_for = time.monotonic() - stopped
    publish_messages(node.amqp_url, exchange, after)
    settle(url, expected, len(before + during + after), daemon)
    recovered = time.monotonic() - stopped - down_for
    assert daemon.alive()
    metrics = daemon.metrics()
    assert daemon.stop() == 0, daemon.output()[-4000:]
    result = exactly_once(url, expected)
    figures(
        broker_down_seconds=round(down_for, 1),
        ready_answers_while_down=Counter(ready_while_down),
        seconds_to_deliver_after_restart=round(recovered, 1),
        daemon_exits_during_outage=0,
        reconnect_lines=daemon.output().count("consuming fmn-faults-"),
        messages_in_counter=int(metrics["fmn_messages_in_total"]),
        **result,
    )
    assert result["lost"] == result["unexpected"] == result["outbox_duplicates"] == 0
    assert count_rows(url, "messages") == len(before + during + after)
    assert not all(ready_while_down), "/ready kept answering 200 without a broker"


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_outage_postgresql_restart_loses_nothing(
    private_postgres: Any, rabbitmq: Any, make_daemon: Any, figures: Any
) -> None:
    admin = create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('CREATE DATABASE "fmn"'))
    admin.dispose()
    url = private_postgres.url.rsplit("/", 1)[0] + "/fmn"
    upgrade_schema(url)
    set_up_watcher(url)
    before, during, after = (
        fresh_messages(150, p, i) for i, p in enumerate(("pre", "mid", "post"))
    )
    expected = expected_recipients(url, before + during + after)

    daemon = make_daemon(url, rabbitmq.config_path, extra=DELIVERY)
    daemon.start()
    publish_messages(rabbitmq.amqp_url, rabbitmq.exchange, before)
    wait_for(
        lambda: count_rows(url, "messages") >= len(before),
        timeout=60,
        what="the first messages stored",
    )
    publish_messages(rabbitmq.amqp_url, rabbitmq.exchange, during)
    stopped = time.monotonic()
    private_postgres.stop("immediate")
    # Messages keep arriving while the database is away; they must wait in the queue.
    publish_messages(rabbitmq.amqp_url, rabbitmq.exchange, after)
    ready_while_down = hold_down(daemon, OUTAGE_SECONDS)
    waiting_in_queue = rabbitmq.queue_depth()
    private_postgres.start()
    down_for = time.monotonic() - stopped
    settle(url, expected, len(before + during + after), daemon)
    recovered = time.monotonic() - stopped - down_for
    assert daemon.alive()
    metrics = daemon.metrics()
    assert daemon.stop() == 0, daemon.output()[-4000:]
    result = exactly_once(url, expected)
    figures(
        database_down_seconds=round(down_for, 1),
        ready_answers_while_down=Counter(ready_while_down),
        queued_while_down=waiting_in_queue,
        seconds_to_deliver_after_restart=round(recovered, 1),
        daemon_exits_during_outage=0,
        db_errors_counter=int(metrics["fmn_db_errors_total"]),
        **result,
    )
    assert result["lost"] == result["unexpected"] == result["outbox_duplicates"] == 0
    assert count_rows(url, "messages") == len(before + during + after)
    assert int(metrics["fmn_db_errors_total"]) > 0


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_outage_smtp_down_then_back_delivers_everything_once(
    empty_postgres_url: str,
    rabbitmq: Any,
    restartable_smtp: Any,
    make_daemon: Any,
    figures: Any,
) -> None:
    url = empty_postgres_url
    smtp = restartable_smtp
    upgrade_schema(url)
    set_up_watcher(url, "email", "watcher@example.org")
    before, during = fresh_messages(15, "pre", 1), fresh_messages(25, "mid", 2)
    expected = expected_recipients(url, before + during)
    wanted_mail = {(m, "watcher@example.org") for m, _u, _c in expected}

    daemon = make_daemon(url, rabbitmq.config_path, smtp_port=smtp.port, extra=DELIVERY)
    daemon.start()
    publish_messages(rabbitmq.amqp_url, rabbitmq.exchange, before)
    wait_for(lambda: len(mails_by_message(smtp)) >= len(before), timeout=60, what="the first mails")
    smtp.down()
    stopped = time.monotonic()
    publish_messages(rabbitmq.amqp_url, rabbitmq.exchange, during)

    def failing() -> bool:
        return sum(1 for r in outbox_rows(url) if r[3] == "failed") >= len(during) // 2

    wait_for(failing, timeout=60, what="sends failing while the mail server is down")
    hold_down(daemon, OUTAGE_SECONDS)
    failed_while_down = sum(1 for r in outbox_rows(url) if r[3] == "failed")
    smtp.up()
    down_for = time.monotonic() - stopped
    settle(url, expected, len(before + during), daemon)
    wait_for(
        lambda: wanted_mail <= set(mails_by_message(smtp)),
        timeout=30,
        what="every mail at the server",
    )
    recovered = time.monotonic() - stopped - down_for
    assert daemon.alive()
    metrics = daemon.metrics()
    assert daemon.stop() == 0, daemon.output()[-4000:]
    result = exactly_once(url, expected)
    mails = mails_by_message(smtp)
    figures(
        smtp_down_seconds=round(down_for, 1),
        rows_failed_while_down=failed_while_down,
        seconds_to_deliver_after_recovery=round(recovered, 1),
        daemon_exits_during_outage=0,
        mails_expected=len(wanted_mail),
        mails_received=sum(mails.values()),
        smtp_duplicates=sum(n - 1 for n in mails.values()),
        failed_counter=int(metrics["fmn_notifications_failed_total"]),
        dead_counter=int(metrics["fmn_notifications_dead_total"]),
        **result,
    )
    assert result["lost"] == result["unexpected"] == result["outbox_duplicates"] == 0
    assert set(mails) == wanted_mail
    # A send that failed was never accepted, so nothing was mailed twice.
    assert all(n == 1 for n in mails.values())
    assert int(metrics["fmn_notifications_dead_total"]) == 0
