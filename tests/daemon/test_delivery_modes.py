"""Issue 13 end to end in the daemon: instant and digest filters, a daily digest at a
local hour, quiet hours and urgent filters, through a real SMTP server (aiosmtpd).

The daemon's clock is injected (``Senders(clock=...)``): the tests move it to the
moments that matter instead of sleeping, and the time zones are real
(``zoneinfo``): 18:00 in Prague is 17:00 UTC in December.
"""

from __future__ import annotations

import datetime as dt
import time

from core.test_outbox import add_message, add_notification, add_user, state_of
from sqlalchemy import select

from daemon.conftest import SmtpServer
from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.models import Filter, Preference, User, utcnow
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

from .test_delivery import drain, make_config

UTC = dt.UTC


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def alice_with_two_filters(db: Database, **preference: object) -> tuple[int, int, int]:
    """alice: an instant, urgent filter for failed builds and a digest filter for her
    group's packages in ``email``; returns (user id, failed filter id, group filter id)."""
    with db.begin() as session:
        user = add_user(session, "alice", addresses=("alice@example.org",))
        row = session.scalars(select(Preference).where(Preference.user_id == user.id)).one()
        for key, value in preference.items():
            setattr(row, key, value)
        failed = Filter(preference=row, name="failed builds", urgent=True, position=1)
        group = Filter(preference=row, name="group packages", delivery="digest", position=2)
        session.add_all([failed, group])
        session.flush()
        return user.id, failed.id, group.id


def notify(db: Database, user_id: int, filter_id: int, name: str, at: dt.datetime) -> int:
    """An outbox row as the consumer writes it, at ``at``."""
    with db.begin() as session:
        user = session.get(User, user_id)
        assert user is not None
        return add_notification(
            session,
            user,
            message=add_message(session),
            filter_id=filter_id,
            filter_name=name,
            created_at=at,
            next_attempt_at=at,
        ).id


def test_failed_build_at_once_the_rest_once_at_the_local_hour(
    db: Database, smtp_server: SmtpServer
) -> None:
    clock = Clock(dt.datetime(2026, 12, 5, 10, 0, tzinfo=UTC))  # 11:00 in Prague
    user_id, failed, group = alice_with_two_filters(
        db, digest_at="18:00", digest_timezone="Europe/Prague"
    )
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub(), clock=clock)
    grouped = [notify(db, user_id, group, "group packages", clock.now) for _ in range(3)]
    started = time.monotonic()
    urgent = notify(db, user_id, failed, "failed builds", clock.now)
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert time.monotonic() - started < 5  # within seconds, not at the digest hour
    assert "filter 'failed builds'" in mail.message.get_payload()
    assert state_of(db, urgent).state == "sent"
    for row_id in grouped:
        row = state_of(db, row_id)
        assert (row.state, row.hold_reason) == ("pending", "digest")
        assert row.next_attempt_at == dt.datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    with db.begin() as session:
        (waiting,) = {
            w.reason for w in preferences.pending_notifications(session, preferences.Actor("alice"))
        }
    assert waiting == "held for the next digest until 2026-12-05 17:00 UTC"

    clock.now = dt.datetime(2026, 12, 5, 16, 59, tzinfo=UTC)
    drain(delivery)
    assert len(smtp_server.messages) == 1
    clock.now = dt.datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    drain(delivery)
    mails = smtp_server.wait_for(2)
    assert mails[1].subject.startswith("[fmn] 3 notifications")
    assert all(state_of(db, i).state == "sent" for i in grouped)
    clock.now = dt.datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
    drain(delivery)
    assert len(smtp_server.messages) == 2  # once


def alice_at_night_with_a_plain_filter(db: Database) -> tuple[Clock, int, int, int]:
    """22:30 in Prague, inside alice's quiet hours (22:00-07:00); her user id, her
    urgent filter ``failed`` and a plain (instant) filter ``comments``."""
    clock = Clock(dt.datetime(2026, 12, 5, 21, 30, tzinfo=UTC))
    user_id, failed, _group = alice_with_two_filters(
        db, quiet_from="22:00", quiet_to="07:00", quiet_timezone="Europe/Prague"
    )
    with db.begin() as session:
        row = session.scalars(select(Preference).where(Preference.user_id == user_id)).one()
        plain = Filter(preference=row, name="comments", position=3)
        session.add(plain)
        session.flush()
        return clock, user_id, failed, plain.id


def test_quiet_hours_hold_then_release_as_one_digest_and_urgent_passes(
    db: Database, smtp_server: SmtpServer
) -> None:
    clock, user_id, failed, plain_id = alice_at_night_with_a_plain_filter(db)
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub(), clock=clock)
    held = [notify(db, user_id, plain_id, "comments", clock.now) for _ in range(2)]
    urgent = notify(db, user_id, failed, "failed builds", clock.now)
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert "failed builds" in mail.message.get_payload()
    assert state_of(db, urgent).state == "sent"
    for row_id in held:
        row = state_of(db, row_id)
        assert (row.state, row.hold_reason) == ("pending", "quiet_hours")
        assert row.next_attempt_at == dt.datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    clock.now = dt.datetime(2026, 12, 6, 6, 0, tzinfo=UTC)  # 07:00 in Prague
    drain(delivery)
    mails = smtp_server.wait_for(2)
    assert len(mails) == 2 and mails[1].subject.startswith("[fmn] 2 notifications")
    assert all(state_of(db, i).state == "sent" for i in held)


def test_turning_the_digest_off_releases_it_now(db: Database, smtp_server: SmtpServer) -> None:
    clock = Clock(dt.datetime(2026, 12, 5, 10, 0, tzinfo=UTC))
    user_id, _failed, group = alice_with_two_filters(
        db, digest_at="18:00", digest_timezone="Europe/Prague"
    )
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub(), clock=clock)
    row_id = notify(db, user_id, group, "group packages", clock.now)
    drain(delivery)
    assert smtp_server.messages == []
    with db.begin() as session:
        preferences.set_digest(session, preferences.Actor("alice"), "email", 0, 0)
    # The write path releases the rows as of the real time; the daemon's clock is
    # the real one outside tests.
    clock.now = utcnow()
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert "group packages" in mail.message.get_payload()
    assert state_of(db, row_id).state == "sent"


def test_confirming_the_address_delivers_what_waited_at_once(
    db: Database, smtp_server: SmtpServer
) -> None:
    alice = preferences.Actor("alice")
    with db.begin() as session:
        preferences.add_filter(session, alice, "email", "mine")
        pending = preferences.set_destination(session, alice, "email", "alice@example.org")
    with db.begin() as session:
        user = session.scalars(select(User).where(User.name == "alice")).one()
        row_id = add_notification(session, user, message=add_message(session)).id
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub())
    drain(delivery)
    code_mail = smtp_server.wait_for(1)[0]
    row = state_of(db, row_id)
    assert (row.state, row.hold_reason) == ("failed", "no_address")
    assert pending.code is not None and pending.code in code_mail.message.get_payload()
    with db.begin() as session:
        preferences.confirm(session, alice, pending.code)
    drain(delivery)  # no hour-long wait for the next retry
    assert len(smtp_server.wait_for(2)) == 2
    assert state_of(db, row_id).state == "sent"


def test_a_rate_limited_urgent_digest_leaves_quiet_rows_held(
    db: Database, smtp_server: SmtpServer
) -> None:
    clock, user_id, failed, plain_id = alice_at_night_with_a_plain_filter(db)
    config = make_config(db, smtp_server, rate_limit_per_hour=2)
    delivery = Senders(db, config, Metrics(), LiveHub(), clock=clock)
    held = [notify(db, user_id, plain_id, "comments", clock.now) for _ in range(2)]
    drain(delivery)
    urgent = [notify(db, user_id, failed, "failed builds", clock.now) for _ in range(4)]
    drain(delivery)
    clock.now += dt.timedelta(minutes=16)  # the rate limit's digest is due, still quiet
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith("[fmn] 4 notifications")
    assert all(state_of(db, i).state == "sent" for i in urgent)
    for row_id in held:
        row = state_of(db, row_id)
        assert (row.state, row.hold_reason) == ("pending", "quiet_hours")
        assert row.next_attempt_at == dt.datetime(2026, 12, 6, 6, 0, tzinfo=UTC)


def test_a_time_zone_that_disappeared_reads_as_utc_and_loses_nothing(
    db: Database, smtp_server: SmtpServer
) -> None:
    # Stored when tzdata knew them; a machine whose tzdata dropped them since.
    clock = Clock(dt.datetime(2026, 12, 5, 10, 0, tzinfo=UTC))
    user_id, failed, group = alice_with_two_filters(
        db,
        quiet_from="22:00",
        quiet_to="07:00",
        quiet_timezone="US/Pacific-New",
        digest_at="18:00",
        digest_timezone="Mars/Base",
    )
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub(), clock=clock)
    digest = notify(db, user_id, group, "group packages", clock.now)
    urgent = notify(db, user_id, failed, "failed builds", clock.now)
    drain(delivery)
    smtp_server.wait_for(1)
    assert state_of(db, urgent).state == "sent"
    row = state_of(db, digest)
    assert (row.state, row.hold_reason) == ("pending", "digest")
    assert row.next_attempt_at == dt.datetime(2026, 12, 5, 18, 0, tzinfo=UTC)
