"""Delivery modes (issue 13): per-filter instant/digest, daily digests, quiet hours, urgent.

The policy is pure (``delivery_policy.decide``) and is tested at fixed moments in
real time zones; what changing a policy does to rows already held is tested on
the database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from fmn_core import delivery_policy, outbox
from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import InvalidArgument
from fmn_core.models import Filter, Notification, Preference, utcnow
from fmn_core.portability import export_preferences, import_preferences
from fmn_core.preferences import Actor

from .test_outbox import add_message, add_notification, add_user

# Saturday 5 December 2026, 10:00 UTC = 11:00 in Prague (UTC+1 in winter).
NOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
NO_STATS = delivery_policy.GroupStats(waiting=0, oldest_waiting=None, sent_last_hour=0)
ALICE = Actor("alice")


def claimed(**changes: Any) -> outbox.ClaimedNotification:
    """A claimed row of a user with a confirmed address, made a minute ago."""
    fields: dict[str, Any] = {
        "id": 1,
        "message_id": "m-1",
        "topic": "org.fedoraproject.prod.buildsys.build.state.change",
        "app": "koji",
        "summary": "a build failed",
        "url": None,
        "agent": None,
        "usernames": (),
        "packages": (),
        "severity": 20,
        "user_id": 7,
        "user": "alice",
        "context": "email",
        "filter_name": "mine",
        "created_at": NOW - dt.timedelta(minutes=1),
        "attempts": 0,
        "enabled": True,
        "digest_minutes": 0,
        "digest_count": 0,
        "muted_until": None,
        "destinations": ("alice@example.org",),
        "delivery": "instant",
    }
    fields.update(changes)
    return outbox.ClaimedNotification(**fields)


def decide(row: outbox.ClaimedNotification, **options: Any) -> delivery_policy.Decision:
    return delivery_policy.decide(row, options.pop("stats", NO_STATS), NOW, **options)


# -- the policy, pure ----------------------------------------------------------------------


def test_an_instant_filter_is_sent_at_once_beside_a_daily_digest() -> None:
    row = claimed(delivery="instant", digest_at="18:00", digest_timezone="Europe/Prague")
    assert row.lane == "instant"
    assert decide(row).kind == "send"


def test_a_digest_filter_waits_for_the_local_hour_then_goes_as_one_digest() -> None:
    row = claimed(delivery="digest", digest_at="18:00", digest_timezone="Europe/Prague")
    stats = delivery_policy.GroupStats(waiting=3, oldest_waiting=row.created_at, sent_last_hour=0)
    held = decide(row, stats=stats)
    # 18:00 in Prague is 17:00 UTC in December.
    assert (held.kind, held.until, held.reason) == (
        "hold",
        dt.datetime(2026, 12, 5, 17, 0, tzinfo=dt.UTC),
        "digest",
    )
    at_six = delivery_policy.decide(row, stats, dt.datetime(2026, 12, 5, 17, 0, tzinfo=dt.UTC))
    assert at_six.kind == "digest"


def test_a_digest_filter_without_a_digest_schedule_is_sent_at_once() -> None:
    # Turning the digest off releases what it held: nothing is left to wait for.
    assert decide(claimed(delivery="digest")).kind == "send"


def test_quiet_hours_hold_instant_rows_until_the_window_ends() -> None:
    quiet = {"quiet_from": "09:00", "quiet_to": "12:30", "quiet_timezone": "Europe/Prague"}
    held = decide(claimed(**quiet))
    assert (held.kind, held.until, held.reason) == (
        "hold",
        dt.datetime(2026, 12, 5, 11, 30, tzinfo=dt.UTC),
        "quiet_hours",
    )
    assert "quiet hours" in held.note
    assert decide(claimed(urgent=True, **quiet)).kind == "send"
    # Outside the window: sent.
    assert decide(claimed(quiet_from="22:00", quiet_to="07:00", quiet_timezone="UTC")).kind == (
        "send"
    )


def test_rows_released_from_quiet_hours_go_as_one_digest() -> None:
    row = claimed(hold_reason="quiet_hours")
    assert decide(row, waiting_in_claim=3).kind == "digest"
    assert decide(row, waiting_in_claim=1).kind == "send"


def test_legacy_rows_follow_the_contexts_digest() -> None:
    # Revision 0007 marks the filters of a digest context "digest": a row's default.
    row = claimed(delivery="digest", digest_minutes=30)
    assert decide(row).kind == "hold"


# -- the write path ------------------------------------------------------------------------


def _held(db: Database, reason: str, *, context: str = "email", until_hours: int = 5) -> int:
    with db.begin() as session:
        user = add_user(session, "alice", context, ("alice@example.org",))
        row = add_notification(
            session,
            user,
            context,
            add_message(session),
            next_attempt_at=utcnow() + dt.timedelta(hours=until_hours),
            hold_reason=reason,
        )
        return row.id


def _due(db: Database, row_id: int) -> bool:
    with db.begin() as session:
        row = session.get(Notification, row_id)
        assert row is not None
        due: bool = row.next_attempt_at <= utcnow()
        return due


def test_turning_a_digest_off_releases_what_it_held(db: Database) -> None:
    row_id = _held(db, "digest")
    with db.begin() as session:
        view = prefs.set_digest(session, ALICE, "email", 0, 0)
    assert view.digest_at is None
    assert _due(db, row_id)


def test_ending_quiet_hours_releases_what_they_held(db: Database) -> None:
    row_id = _held(db, "quiet_hours")
    with db.begin() as session:
        prefs.set_quiet_hours(session, ALICE, "email", None, None, None)
    assert _due(db, row_id)


def test_a_shorter_mute_frees_what_a_longer_one_held(db: Database) -> None:
    # Held until the end of a month-long mute; muting again for an hour must not
    # leave the rows waiting for the old end (the senders hold them to the new one).
    row_id = _held(db, "muted", until_hours=30 * 24)
    with db.begin() as session:
        prefs.mute(session, ALICE, dt.timedelta(hours=1))
    assert _due(db, row_id)


def test_importing_preferences_releases_what_the_old_policy_held(db: Database) -> None:
    row_id = _held(db, "digest")
    with db.begin() as session:
        document = export_preferences(session)
    (alice,) = document["users"]
    alice["contexts"]["email"]["digest"] = {"minutes": 0, "count": 0}
    with db.begin() as session:
        import_preferences(session, document, resolve=False)
    assert _due(db, row_id)


def test_confirming_an_address_releases_what_waited_for_it_now(db: Database) -> None:
    row_id = _held(db, "no_address", until_hours=1)
    with db.begin() as session:
        pending = prefs.set_destination(session, ALICE, "email", "new@example.org")
        code = pending.code
    assert code is not None
    with db.begin() as session:
        prefs.confirm(session, ALICE, code)
    assert _due(db, row_id)


def test_a_filters_delivery_and_urgency_are_stored_and_checked(db: Database) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "failed builds")
        view = prefs.set_filter_delivery(session, ALICE, "email", "failed builds", "digest")
        assert (view.delivery, view.urgent) == ("digest", False)
        view = prefs.set_filter_urgent(session, ALICE, "email", "failed builds", True)
        assert (view.delivery, view.urgent) == ("digest", True)
    with db.begin() as session, pytest.raises(InvalidArgument, match="'instant' or 'digest'"):
        prefs.set_filter_delivery(session, ALICE, "email", "failed builds", "hourly")


def test_schedules_are_checked_with_clear_messages(db: Database) -> None:
    with db.begin() as session:
        with pytest.raises(InvalidArgument, match="HH:MM"):
            prefs.set_digest(session, ALICE, "email", 0, 0, at="25:00")
        with pytest.raises(InvalidArgument, match="daily digest's time zone must be an IANA"):
            prefs.set_digest(session, ALICE, "email", 0, 0, at="08:00", timezone="Mars/Base")
        with pytest.raises(InvalidArgument, match="daily digest's time zone must be an IANA"):
            prefs.set_daily_digest(session, ALICE, "email", "08:00", "Mars/Base")
        with pytest.raises(InvalidArgument, match="quiet hours' time zone must be an IANA"):
            prefs.set_quiet_hours(session, ALICE, "email", "22:00", "07:00", "Mars/Base")
        with pytest.raises(InvalidArgument, match="quiet hours"):
            prefs.set_quiet_hours(session, ALICE, "email", "22:00", None, "UTC")
        with pytest.raises(InvalidArgument, match="differ"):
            prefs.set_quiet_hours(session, ALICE, "email", "22:00", "22:00", "UTC")
    with db.begin() as session:
        view = prefs.set_quiet_hours(session, ALICE, "email", "22:00", "7:00", "Europe/Prague")
    assert (view.quiet_from, view.quiet_to, view.quiet_timezone) == (
        "22:00",
        "07:00",
        "Europe/Prague",
    )


def test_pending_notifications_say_why_and_only_to_their_owner(db: Database) -> None:
    _held(db, "quiet_hours")
    with db.begin() as session:
        mine = prefs.pending_notifications(session, ALICE)
        theirs = prefs.pending_notifications(session, Actor("bob"))
    assert len(mine) == 1 and theirs == []
    assert mine[0].reason.startswith("held for your quiet hours until ")
    with db.begin() as session:
        recent = prefs.recent_notifications(session, ALICE)
    assert recent[0].reason == mine[0].reason


def test_claimed_rows_carry_their_filters_delivery(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "alice")
        preference = session.scalars(select(Preference).where(Preference.user_id == user.id)).one()
        preference.digest_at, preference.digest_timezone = "08:00", "Europe/Prague"
        digest = Filter(preference=preference, name="group", delivery="digest", position=1)
        urgent = Filter(preference=preference, name="fails", urgent=True, position=2)
        session.add_all([digest, urgent])
        session.flush()
        add_notification(session, user, message=add_message(session), filter_id=digest.id)
        add_notification(
            session,
            user,
            message=add_message(session),
            filter_id=urgent.id,
        )
    with db.begin() as session:
        rows = outbox.claim_due(session, worker="w", limit=10, lease_seconds=60)
    assert sorted(r.lane for r in rows) == ["digest", "urgent"]
    assert {r.digest_at for r in rows} == {"08:00"}
