"""The preferences file carries delivery modes, daily digests and quiet hours (issue 13)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.conftest import database_at
from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import ImportRejected
from fmn_core.models import Filter, Notification, StoredMessage, User, utcnow
from fmn_core.outbox import claim_due
from fmn_core.portability import export_preferences, import_preferences
from fmn_core.preferences import Actor

ALICE = Actor("alice")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Database]:
    """A second, empty database to import into."""
    with database_at(f"sqlite:///{tmp_path / 'fresh.sqlite'}") as db:
        yield db


def test_the_new_keys_round_trip(db: Database, fresh: Database) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "failed builds")
        prefs.add_rule(session, ALICE, "email", "failed builds", "app_is", {"app": "koji"})
        prefs.set_filter_urgent(session, ALICE, "email", "failed builds", True)
        prefs.add_filter(session, ALICE, "email", "group packages")
        prefs.add_rule(session, ALICE, "email", "group packages", "app_is", {"app": "bodhi"})
        prefs.set_filter_delivery(session, ALICE, "email", "group packages", "digest")
        prefs.set_digest(session, ALICE, "email", 0, 0, at="18:00", timezone="Europe/Prague")
        prefs.set_quiet_hours(session, ALICE, "email", "22:00", "07:00", "America/New_York")
    with db.begin() as session:
        exported = export_preferences(session)
    email = exported["users"][0]["contexts"]["email"]
    assert email["digest"] == {"minutes": 0, "count": 0, "at": "18:00", "timezone": "Europe/Prague"}
    assert email["quiet_hours"] == {"from": "22:00", "to": "07:00", "timezone": "America/New_York"}
    failed, group = email["filters"]
    assert (failed.get("delivery"), failed.get("urgent")) == (None, True)
    assert (group.get("delivery"), group.get("urgent")) == ("digest", None)
    with fresh.begin() as session:
        import_preferences(session, copy.deepcopy(exported))
    with fresh.begin() as session:
        assert export_preferences(session) == exported
        view = prefs.get_context(session, ALICE, "email")
    assert (view.digest_at, view.digest_timezone) == ("18:00", "Europe/Prague")
    assert [(f.delivery, f.urgent) for f in view.filters] == [("instant", True), ("digest", False)]


def test_explicit_defaults_and_null_quiet_hours_import(fresh: Database) -> None:
    document: dict[str, Any] = {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "digest": {"minutes": 5, "count": 0, "at": None, "timezone": "UTC"},
                        "quiet_hours": None,
                        "filters": [
                            {"name": "f", "delivery": "instant", "urgent": False, "rules": []}
                        ],
                    }
                },
            }
        ]
    }
    with fresh.begin() as session:
        import_preferences(session, document)
    with fresh.begin() as session:
        view = prefs.get_context(session, ALICE, "email")
    assert (view.digest_minutes, view.digest_at, view.quiet_from) == (5, None, None)


def test_bad_delivery_values_are_refused_naming_their_path(fresh: Database) -> None:
    document: dict[str, Any] = {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "digest": {"minutes": 0, "count": 0, "at": "8pm", "timezone": "Mars/Base"},
                        "quiet_hours": {
                            "from": "22:00",
                            "to": "22:00",
                            "timezone": "UTC",
                            "why": 1,
                        },
                        "filters": [
                            {"name": "f", "delivery": "hourly", "urgent": "yes", "rules": []}
                        ],
                    }
                },
            }
        ]
    }
    with pytest.raises(ImportRejected) as caught, fresh.begin() as session:
        import_preferences(session, document)
    problems = dict(caught.value.problems)
    base = "users[0].contexts.email"
    assert "HH:MM" in problems[f"{base}.digest.at"]
    assert "IANA" in problems[f"{base}.digest.timezone"]
    assert "unknown key" in problems[f"{base}.quiet_hours.why"]
    assert "differ" in problems[f"{base}.quiet_hours.to"]
    assert "instant" in problems[f"{base}.filters[0].delivery"]
    assert "true or false" in problems[f"{base}.filters[0].urgent"]


def _waiting_row(db: Database, hold_reason: str | None = None) -> None:
    """One notification of alice's only email filter, waiting in the outbox."""
    with db.begin() as session:
        user = session.scalars(select(User)).one()
        filter_ = session.scalars(select(Filter)).one()
        session.add(StoredMessage(id="m1", topic="t", body={}, headers={}))
        session.flush()
        session.add(
            Notification(
                message_id="m1",
                user_id=user.id,
                context="email",
                filter_id=filter_.id,
                filter_name=filter_.name,
                state="failed" if hold_reason else "pending",
                attempts=1 if hold_reason else 0,
                hold_reason=hold_reason,
                next_attempt_at=utcnow() + dt.timedelta(hours=1 if hold_reason else 0),
            )
        )


def test_reimporting_the_same_file_keeps_waiting_rows_in_their_filters_lane(db: Database) -> None:
    """An urgent filter's waiting row still passes quiet hours after the import: a row
    whose filter is gone would wait for the context's digest instead."""
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "failed builds")
        prefs.add_rule(session, ALICE, "email", "failed builds", "app_is", {"app": "koji"})
        prefs.set_filter_urgent(session, ALICE, "email", "failed builds", True)
        prefs.set_digest(session, ALICE, "email", 60, 0)
        prefs.set_quiet_hours(session, ALICE, "email", "00:00", "23:59", "UTC")
    _waiting_row(db)
    with db.begin() as session:
        exported = export_preferences(session)
    with db.begin() as session:
        import_preferences(session, copy.deepcopy(exported))
    with db.begin() as session:
        row = session.scalars(select(Notification)).one()
        assert row.filter_id == session.scalars(select(Filter.id)).one()
        (claimed,) = claim_due(session, worker="w", limit=10, lease_seconds=30)
    assert (claimed.delivery, claimed.urgent, claimed.lane) == ("instant", True, "urgent")


def test_an_import_giving_an_address_releases_rows_that_waited_for_one(db: Database) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "builds")
        prefs.add_rule(session, ALICE, "email", "builds", "app_is", {"app": "koji"})
    _waiting_row(db, hold_reason="no_address")
    with db.begin() as session:
        document = export_preferences(session)
    document["users"][0]["contexts"]["email"]["destinations"] = ["alice@example.org"]
    with db.begin() as session:
        import_preferences(session, document)
    with db.begin() as session:
        row = session.scalars(select(Notification)).one()
        assert row.next_attempt_at <= utcnow()
