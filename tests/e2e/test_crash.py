"""SIGKILL in the middle of a stream, restart: every notification exactly once.

The first daemon only consumes (``--no-deliver``) and is killed with SIGKILL
while 2,000 messages stream in: no clean-up, batches half-received, maybe a
transaction in flight. A second daemon, consuming and delivering, finishes the
job. The outbox must then hold exactly the notifications the matcher says the
stream deserves, each sent, and the SMTP server must have received each e-mail
exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon.conftest import RabbitMQ, SmtpServer, publish
from fedora_messaging import message as fm_message
from sqlalchemy import func, select

from fmn_core import preferences
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.matcher import Matcher
from fmn_core.messages import facts_of
from fmn_core.models import Notification, StoredMessage, User
from fmn_core.preferences import Actor
from fmn_daemon.cli import main

from .conftest import Daemon, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

STREAM = 2000
#: Every MAIL_EVERY-th message goes to the mailer by e-mail.
MAIL_EVERY = 20


def stream_messages() -> list[fm_message.Message]:
    messages = []
    for n in range(STREAM):
        suffix = ".mail" if n % MAIL_EVERY == 0 else ""
        messages.append(
            fm_message.Message(
                topic=f"org.fedoraproject.test.koji.crash.n{n}{suffix}", body={"n": n}
            )
        )
    return messages


def test_crash_mid_stream_then_restart_delivers_everything_exactly_once(
    empty_postgres_url: str,
    make_daemon: Callable[..., Daemon],
    rabbitmq: RabbitMQ,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\n'
        "[delivery]\nidle_poll_seconds = 0.2\nrate_limit_per_hour = 1000000\nsenders = 8\n"
    )
    daemon = make_daemon(empty_postgres_url, settings)
    assert main(["--config", str(daemon.config), "db", "upgrade"]) == 0
    db = Database(Config(database_url=empty_postgres_url))
    try:
        with db.begin() as session:
            reader, mailer = Actor("reader"), Actor("mailer")
            preferences.add_filter(session, reader, "rss", "all koji")
            preferences.add_rule(session, reader, "rss", "all koji", "app_is", {"app": "koji"})
            preferences.set_destination(session, reader, "rss", None)
            preferences.add_filter(session, mailer, "email", "some")
            preferences.add_rule(
                session, mailer, "email", "some", "topic_matches", {"pattern": "*.mail"}
            )
            code = preferences.set_destination(session, mailer, "email", "mailer@example.org").code
            assert code is not None
            assert preferences.confirm(session, mailer, code).confirmed
        messages = stream_messages()
        with db.begin() as session:
            matcher = Matcher.load(session)
            names = dict(session.execute(select(User.id, User.name)).all())
        expected = {
            (m.id, r.user, r.context) for m in messages for r in matcher.recipients(facts_of(m))
        }
        assert len(expected) == STREAM + STREAM // MAIL_EVERY

        def stored() -> int:
            with db.begin() as session:
                return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)

        # Phase 1: a consumer only, killed while the stream is coming in.
        daemon.start("--no-deliver")
        publisher = threading.Thread(target=publish, args=(rabbitmq, messages))
        publisher.start()
        wait_for(lambda: stored() >= 300, timeout=60, what="300 messages stored")
        daemon.kill()
        at_kill = stored()
        publisher.join(60)
        assert 0 < at_kill < STREAM, f"the kill came too late to be mid-stream ({at_kill} stored)"
        with db.begin() as session:
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.state != "pending")
                )
                == 0
            )  # nothing was sent yet

        # Phase 2: a full daemon picks up where the dead one stopped.
        daemon.start()
        wait_for(lambda: stored() == STREAM, timeout=120, what="every message stored")

        def settled() -> bool:
            with db.begin() as session:
                states = dict(
                    session.execute(
                        select(Notification.state, func.count()).group_by(Notification.state)
                    ).all()
                )
            return set(states) == {"sent"} and states["sent"] == len(expected)

        wait_for(settled, timeout=120, what="every notification sent")
        smtp_server.wait_for(STREAM // MAIL_EVERY, timeout=60)
        time.sleep(1.0)  # anything extra would arrive now
        assert daemon.stop() == 0, daemon.output()

        with db.begin() as session:
            rows = session.execute(
                select(Notification.message_id, Notification.user_id, Notification.context)
            ).all()
        got = {(message_id, names[user_id], context) for message_id, user_id, context in rows}
        assert len(rows) == len(got)  # no duplicate rows
        assert got == expected
        assert rabbitmq.queue_depth() == 0

        mailed = Counter(mail.message["X-Fedmsg-Id"] for mail in smtp_server.messages)
        assert sum(mailed.values()) == STREAM // MAIL_EVERY
        assert max(mailed.values()) == 1  # zero duplicates
        assert set(mailed) == {m for m, user, _ in expected if user == "mailer"}
    finally:
        db.dispose()
