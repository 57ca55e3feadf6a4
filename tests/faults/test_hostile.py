"""Issue 10's hostile bus: ``fmn-daemon run`` fed what an attacker on the bus would send.

- ``test_hostile_stream_every_tenth_delivery``: the issue's "done when". Real
  corpus messages, and every tenth delivery hostile (each kind the issue found,
  plus the kinds the fuzzer in ``test_fuzz_bus.py`` produces), into a quorum queue
  with a delivery limit and a dead-letter exchange, as docs/reliability.md tells
  operators to run it. Every real notification is delivered exactly once (outbox
  == what the matcher expects, one mail each), the daemon is never restarted, each
  hostile delivery is logged once, and peak RSS and file descriptors stay under
  bounds. The figures go to docs/reliability.md ("Hostile stream").
- ``test_quorum_delivery_limit_ends_a_frame_level_poison_loop``: what the broker
  side does on its own, for consumers without fmn's bounded decoder.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pytest

from fmn_core.text import one_line

from .conftest import (
    Outgoing,
    count_rows,
    env_int,
    expected_recipients,
    faults_full,
    fresh_messages,
    mails_by_message,
    outbox_rows,
    outgoing,
    upgrade_schema,
    wait_for,
)
from .hostile_bus import (
    CONTROL,
    DAEMON_EXTRA,
    FD_BOUND,
    HOSTILE_KINDS,
    HUGE_EVERY,
    RSS_BOUND_MB,
    Gauge,
    declare_dead_letters,
    deep_headers,
    delete_broker_objects,
    hostile_delivery,
    publish_all,
    publish_to_default_exchange,
    queue_count,
    quorum_config,
    set_up_mail_watcher,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


# --------------------------------------------------------------------------- the stream


def test_hostile_stream_every_tenth_delivery(
    empty_postgres_url: str,
    rabbitmq: Any,
    smtp_server: Any,
    make_daemon: Any,
    figures: Any,
    tmp_path: Path,
) -> None:
    url = empty_postgres_url
    upgrade_schema(url)
    address = set_up_mail_watcher(url)
    real_count = env_int("FMN_HOSTILE_REAL", 5000 if faults_full() else 900)
    real = fresh_messages(real_count, "real", seed=10)
    # Valid but hostile-looking: control characters in the id and the topic; delivered
    # (once) with clean headers and log lines.
    sample = real[0]
    tricky = [
        dict(sample, id=f"tricky-{n:02d}{CONTROL}", topic=sample["topic"] + f".x{CONTROL}")
        for n in range(5)
    ]
    deliverable = real + tricky
    expected = expected_recipients(url, deliverable)
    assert len(expected) == len(deliverable)

    rng = random.Random(1010)
    items: list[Outgoing] = []
    hostile_ids: dict[str, str | None] = {}
    kinds: Counter[str] = Counter()
    queue_of_valid = [outgoing(m) for m in deliverable]
    rng.shuffle(queue_of_valid)
    n = 0
    while queue_of_valid:
        for _ in range(9):
            if queue_of_valid:
                items.append(queue_of_valid.pop())
        kind = HOSTILE_KINDS[n % len(HOSTILE_KINDS)]
        if kind == "huge_body_50mb" and (n // len(HOSTILE_KINDS)) % HUGE_EVERY:
            kind = "deep_body_10000"
        item, logged_as = hostile_delivery(kind, n, rng.choice(real))
        items.append(item)
        hostile_ids[f"{kind}-{n}"] = logged_as
        kinds[kind] += 1
        n += 1

    fm_config = quorum_config(
        tmp_path / "quorum.toml", rabbitmq.amqp_url, rabbitmq.queue + "-q", rabbitmq.exchange
    )
    dead_letters = declare_dead_letters(rabbitmq.amqp_url, rabbitmq.exchange)
    daemon = make_daemon(url, fm_config, smtp_port=smtp_server.port, extra=DAEMON_EXTRA)
    try:
        daemon.start()
        assert daemon.process is not None
        pid = daemon.process.pid
        gauge = Gauge(pid)
        fds_at_start = gauge.fds()
        started = time.monotonic()
        publish_all(rabbitmq.amqp_url, rabbitmq.exchange, items)

        def delivered() -> bool:
            rows = outbox_rows(url)
            return len(rows) >= len(expected) and all(r[3] == "sent" for r in rows)

        try:
            wait_for(
                lambda: daemon.metrics()["fmn_messages_in_total"] >= len(items),
                timeout=300,
                what="every delivery taken",
                interval=0.5,
            )
            wait_for(delivered, timeout=300, what="every notification sent", interval=0.5)
            smtp_server.wait_for(len(expected), timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{daemon.output()[-4000:]}") from None
        seconds = time.monotonic() - started
        metrics = daemon.metrics()
        gauge.stop()
        peak_rss = gauge.peak_rss_mb()
        fds_at_end = gauge.fds()
        assert daemon.alive() and daemon.process.pid == pid and daemon.runs == 1
        assert daemon.stop() == 0, daemon.output()[-3000:]
        dead_lettered = queue_count(rabbitmq.amqp_url, dead_letters)
    finally:
        delete_broker_objects(
            rabbitmq.amqp_url, [rabbitmq.queue + "-q", dead_letters], [dead_letters]
        )
    log = daemon.output()
    rows = outbox_rows(url)
    mails = mails_by_message(smtp_server)
    expected_mails = {(one_line(message_id), address) for message_id, _u, _c in expected}

    logged_once = {
        key: log.count(f"message {shown}:") for key, shown in hostile_ids.items() if shown
    }
    no_id_lines = sum(1 for line in log.splitlines() if "message (no id):" in line)
    refused = len(hostile_ids)
    figures(
        deliveries=len(items),
        real=len(real),
        valid_with_control_characters=len(tricky),
        hostile=len(hostile_ids),
        hostile_kinds=dict(sorted(kinds.items())),
        notifications=len(rows),
        mails=sum(mails.values()),
        malformed_counter=int(metrics["fmn_messages_malformed_total"]),
        dead_messages=int(metrics["fmn_messages_dead_total"]),
        dead_lettered_by_broker=dead_lettered,
        peak_rss_mb=round(peak_rss),
        fds_start=fds_at_start,
        fds_max=gauge.max_fds,
        fds_end=fds_at_end,
        daemon_runs=daemon.runs,
        seconds=round(seconds, 1),
    )
    assert {(m, u, c) for m, u, c, _s, _a in rows} == expected
    assert all(state == "sent" for _m, _u, _c, state, _a in rows)
    assert set(mails) == expected_mails and set(mails.values()) == {1}
    assert int(metrics["fmn_messages_malformed_total"]) == refused
    # Each one is refused on arrival; none gets as far as a failed batch.
    assert int(metrics["fmn_messages_dead_total"]) == 0
    assert count_rows(url, "dead_messages") == 0
    assert {k: v for k, v in logged_once.items() if v != 1} == {}
    assert no_id_lines == kinds["no_id"]
    assert "Traceback" not in log
    assert not any(c in log for c in "\x1b\x07\x01")
    assert "\nforged: line" not in log
    assert "lost the broker connection" not in log
    assert peak_rss < RSS_BOUND_MB
    assert gauge.max_fds < FD_BOUND
    # fmn's own bounds handled everything: the broker never had to dead-letter.
    assert dead_lettered == 0


def test_quorum_delivery_limit_ends_a_frame_level_poison_loop(rabbitmq: Any, figures: Any) -> None:
    """A consumer without fmn's bounded decoder loses its connection on every try; the
    quorum queue's ``x-delivery-limit`` dead-letters the frame, and the queue moves on."""
    queue = rabbitmq.queue + "-qq"
    dead = declare_dead_letters(rabbitmq.amqp_url, rabbitmq.exchange)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    try:
        connection.channel().queue_declare(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 3,
                "x-dead-letter-exchange": rabbitmq.exchange + ".dead",
            },
        )
    finally:
        connection.close()
    try:
        publish_to_queue = [
            Outgoing("frame-poison", queue, b"{}", deep_headers(3000)),
            Outgoing("behind-it", queue, b"{}"),
        ]
        publish_to_default_exchange(rabbitmq.amqp_url, publish_to_queue)
        # A plain pika consumer in a process of its own: no bounded decoder there.
        script = textwrap.dedent(
            f"""
            import pika
            for attempt in range(10):
                try:
                    c = pika.BlockingConnection(pika.URLParameters({rabbitmq.amqp_url!r}))
                    ch = c.channel()
                    method, properties, body = ch.basic_get({queue!r})
                    if method is not None:
                        ch.basic_ack(method.delivery_tag)
                    c.close()
                    print(attempt, properties.message_id if properties else None, flush=True)
                    if properties is not None and properties.message_id == "behind-it":
                        break
                except Exception as exc:
                    print(attempt, "lost", type(exc).__name__, flush=True)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        lines = done.stdout.splitlines()
        lost = sum(1 for line in lines if "lost" in line)
        figures(rabbitmq_lost_connections=lost, consumer_log=lines)
        assert lines and lines[-1].endswith("behind-it"), done.stdout + done.stderr
        assert 1 <= lost <= 4
        assert queue_count(rabbitmq.amqp_url, dead) == 1
    finally:
        delete_broker_objects(rabbitmq.amqp_url, [queue, dead], [dead])
