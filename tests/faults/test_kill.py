"""SIGKILL the daemon again and again over a message stream: nothing lost, nothing doubled.

The daemon runs as ``fmn-daemon run`` on PostgreSQL (a fresh database) and a
real RabbitMQ queue of its own. A publisher thread streams bus messages (the
shared corpus, each with a fresh id; a segment of random size per daemon run,
published while that run is up) while the test SIGKILLs the daemon at random
moments — some while it is still starting, most while it
consumes and delivers — and starts it again each time. Then a last run drains
everything and the outbox is compared with what ``fmn_core.matcher`` computes
for the same messages and the same users:

- outbox rows: exactly the expected ``(message, user, context)`` set, each once
  (this must hold: store + match + outbox + commit, then ack);
- e-mail: every expected ``(message, user)`` mail arrived at the SMTP server at
  least once; how many arrived twice is measured and reported (a kill between the
  SMTP server accepting a mail and ``mark_sent`` committing sends it again once
  the row's lease expires: at-least-once is what an external SMTP server allows).

Sizes: 3,000 messages and 8 kills by default (the suite's time budget); 10,000
messages and 20 kills with ``FMN_FAULTS_FULL=1``; ``FMN_FAULTS_MESSAGES`` and
``FMN_FAULTS_KILLS`` set them exactly. ``FMN_FAULTS_SEED`` replays a run's random
choices (the seed is among the reported figures).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fmn_core import preferences
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.preferences import Actor

from .conftest import (
    Publisher,
    background,
    corpus_messages,
    count_rows,
    env_int,
    expected_recipients,
    faults_full,
    mail_ids_by_message,
    mails_by_message,
    outbox_rows,
    outgoing,
    upgrade_schema,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

#: The full size (``FMN_FAULTS_FULL=1``) takes about four minutes on a 2-core machine, more
#: than the whole faults suite may take in ``nox -s tests``; the default is smaller.
MESSAGES = env_int("FMN_FAULTS_MESSAGES", 10_000 if faults_full() else 3_000)
KILLS = env_int("FMN_FAULTS_KILLS", 20 if faults_full() else 8)
#: How long each run's share of the stream takes to publish.
SEGMENT_SECONDS = 4.0

#: Users whose ``rss`` context follows one application (delivery only marks rows sent).
FEED_APPS = ("pagure", "bodhi", "anitya", "buildsys", "compose", "fedoratagger", "pkgdb", "git")
#: Users who get e-mail for one (rarer) application, through the real SMTP server.
MAIL_APPS = {"mailer-fedocal": "fedocal"}

DELIVERY = """\
[delivery]
senders = 4
idle_poll_seconds = 0.2
claim_lease_seconds = 5
rate_limit_per_hour = 1000000
backoff_seconds = 1
backoff_max_seconds = 5
max_attempts = 50
shutdown_grace_seconds = 10
"""


def set_up_users(database_url: str) -> dict[str, str]:
    """The users, through the preference service; their mail addresses by user."""
    db = Database(Config(database_url=database_url))
    addresses = {}
    try:
        with db.begin() as session:
            for index, app in enumerate(FEED_APPS):
                actor = Actor(f"feeder{index:02d}")
                preferences.add_filter(session, actor, "rss", app)
                preferences.add_rule(session, actor, "rss", app, "app_is", {"app": app})
                preferences.set_destination(session, actor, "rss", None)
            for name, app in MAIL_APPS.items():
                actor = Actor(name)
                preferences.add_filter(session, actor, "email", app)
                preferences.add_rule(session, actor, "email", app, "app_is", {"app": app})
                address = f"{name}@example.org"
                pending = preferences.set_destination(session, actor, "email", address)
                assert pending.code is not None
                assert preferences.confirm(session, actor, pending.code).confirmed
                addresses[name] = address
    finally:
        db.dispose()
    return addresses


def declare_queue(amqp_url: str, queue: str, exchange: str) -> None:
    """The queue and binding the daemon declares, made before the stream starts."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")
    finally:
        connection.close()


def test_kill_daemon_loses_and_duplicates_no_notification(
    empty_postgres_url: str,
    rabbitmq: Any,
    smtp_server: Any,
    make_daemon: Any,
    figures: Any,
    tmp_path: Path,
) -> None:
    url = empty_postgres_url
    seed = int(os.environ.get("FMN_FAULTS_SEED") or random.randrange(1, 10**9))
    rng = random.Random(seed)
    upgrade_schema(url)
    addresses = set_up_users(url)
    corpus = corpus_messages()
    stream = [
        dict(rng.choice(corpus), id=f"kill-{i:05d}-{uuid.uuid4().hex[:12]}")
        for i in range(MESSAGES)
    ]
    expected = expected_recipients(url, stream)
    expected_mail = {
        (message_id, addresses[user])
        for message_id, user, context in expected
        if context == "email"
    }
    assert expected_mail and len(expected) > len(expected_mail)

    declare_queue(rabbitmq.amqp_url, rabbitmq.queue, rabbitmq.exchange)
    daemon = make_daemon(url, rabbitmq.config_path, smtp_port=smtp_server.port, extra=DELIVERY)

    published = [0]
    failure: list[BaseException] = []
    # The stream is cut into one segment per daemon run; each segment starts when
    # its run starts and is published over SEGMENT_SECONDS, so that the kills are
    # spread over the whole stream whatever the machine's speed.
    bounds = sorted(rng.sample(range(1, MESSAGES), KILLS)) if KILLS < MESSAGES else []
    segments = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, MESSAGES], strict=True)]
    runs = [threading.Event() for _ in segments]

    def publish_stream() -> None:
        try:
            publisher = Publisher(rabbitmq.amqp_url, rabbitmq.exchange)
            try:
                for run, segment in zip(runs, segments, strict=True):
                    if not run.wait(timeout=600):
                        raise TimeoutError("the daemon runs stopped coming")
                    start = time.monotonic()
                    for index, message in enumerate(segment):
                        delay = start + index * SEGMENT_SECONDS / len(segment) - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        publisher.publish(outgoing(message))
                        published[0] += 1
            finally:
                publisher.close()
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    started = time.monotonic()
    publisher = background(publish_stream, "faults-publisher")
    kills: list[tuple[str, int]] = []
    for number in range(KILLS):
        daemon.start(wait_ready=False)
        runs[number].set()
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.3, 3.0))
            phase = "running" if daemon.ready() else "starting"
        else:
            # The first batch commits a few seconds after /ready (the schema classes
            # load on the first message): kill before, during and after it.
            daemon.wait_ready()
            time.sleep(rng.uniform(0.1, 4.5))
            phase = "running"
        assert daemon.alive(), f"the daemon exited by itself:\n{daemon.output()[-4000:]}"
        kills.append((phase, published[0]))
        daemon.kill()
    daemon.start()
    runs[-1].set()
    publisher.join(timeout=SEGMENT_SECONDS * len(segments) + 120)
    assert not failure, failure
    assert published[0] == MESSAGES

    def settled() -> bool:
        if count_rows(url, "messages") < MESSAGES:
            return False
        rows = outbox_rows(url)
        return len(rows) >= len(expected) and all(row[3] == "sent" for row in rows)

    wait_for(
        settled, timeout=240, what="every message stored and every notification sent", interval=1.0
    )
    wait_for(
        lambda: expected_mail <= set(mails_by_message(smtp_server)),
        timeout=60,
        what="every expected mail at the SMTP server",
    )
    metrics = daemon.metrics()
    assert daemon.stop() == 0, daemon.output()[-4000:]
    elapsed = time.monotonic() - started

    rows = outbox_rows(url)
    keys = Counter((message_id, user, context) for message_id, user, context, _s, _a in rows)
    lost = expected - set(keys)
    unexpected = set(keys) - expected
    outbox_duplicates = sum(n - 1 for n in keys.values())
    mails = mails_by_message(smtp_server)
    mail_missing = expected_mail - set(mails)
    mail_unexpected = set(mails) - expected_mail
    mail_duplicates = sum(n - 1 for key, n in mails.items() if key in expected_mail)
    figures(
        seed=seed,
        messages=MESSAGES,
        kills=len(kills),
        kills_while_starting=sum(1 for phase, _ in kills if phase == "starting"),
        kill_points=[at for _, at in kills],
        daemon_runs=daemon.runs,
        stored_messages=count_rows(url, "messages"),
        expected_notifications=len(expected),
        outbox_rows=len(rows),
        lost=len(lost),
        unexpected=len(unexpected),
        outbox_duplicates=outbox_duplicates,
        expected_mails=len(expected_mail),
        mails_received=sum(mails.values()),
        smtp_duplicates=mail_duplicates,
        smtp_missing=len(mail_missing),
        last_run_counters={k: int(v) for k, v in metrics.items() if k.endswith("_total")},
        seconds=round(elapsed, 1),
    )
    # Outbox level: exactly once.
    assert not lost, sorted(lost)[:10]
    assert not unexpected, sorted(unexpected)[:10]
    assert outbox_duplicates == 0
    assert count_rows(url, "messages") == MESSAGES
    # SMTP level: at least once; a duplicate needs a kill between SMTP's 250 and mark_sent,
    # so there can be at most one per kill and sender slot (``senders = 4`` above).
    assert not mail_missing, sorted(mail_missing)[:10]
    assert not mail_unexpected, sorted(mail_unexpected)[:10]
    assert mail_duplicates <= len(kills) * 4
    # A mail sent again carries the Message-ID of the first: clients fold the two.
    resent = {key: ids for key, ids in mail_ids_by_message(smtp_server).items() if mails[key] > 1}
    assert all(len(ids) == 1 for ids in resent.values()), resent
    assert "the consumer thread crashed" not in daemon.output()
    assert rabbitmq.queue_depth() == 0
