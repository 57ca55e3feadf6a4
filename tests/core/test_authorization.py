"""Nobody reads or changes another user's preferences, through any operation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fmn_core import preferences as prefs
from fmn_core.accounts import LocalDirectory, Profile
from fmn_core.db import Database
from fmn_core.destinations import hash_code, new_code
from fmn_core.errors import ConfirmationFailed, InvalidArgument, NotFound, PermissionDenied
from fmn_core.models import (
    ChangeEvent,
    Confirmation,
    Destination,
    Filter,
    Notification,
    Preference,
    Rule,
    StoredMessage,
    User,
    utcnow,
)
from fmn_core.preferences import Actor

ALICE = Actor("alice")
ADMIN = Actor("root", is_admin=True)
BOB = Actor("bob")

Operation = Callable[[Session, Actor, str | None, dict[str, Any]], Any]


def _bob_profiled(session: Session) -> Session:
    """The session, with a directory whose profile of bob lists an email."""
    session.info["directory"] = LocalDirectory(
        session, profiles=[Profile("bob", emails=("bob@example.org",))]
    )
    return session


#: Every operation that takes ``user=``, called on bob's data. ``ids`` holds the
#: ids of bob's rows that the setup made.
OPERATIONS: dict[str, Operation] = {
    "list_contexts": lambda s, a, u, ids: prefs.list_contexts(s, a, user=u),
    "get_context": lambda s, a, u, ids: prefs.get_context(s, a, "email", user=u),
    "set_context_enabled": lambda s, a, u, ids: prefs.set_context_enabled(
        s, a, "email", False, user=u
    ),
    "set_digest": lambda s, a, u, ids: prefs.set_digest(s, a, "email", 30, 5, user=u),
    "set_daily_digest": lambda s, a, u, ids: prefs.set_daily_digest(
        s, a, "email", "08:00", "Europe/Prague", user=u
    ),
    "set_quiet_hours": lambda s, a, u, ids: prefs.set_quiet_hours(
        s, a, "email", "22:00", "07:00", "UTC", user=u
    ),
    "set_filter_delivery": lambda s, a, u, ids: prefs.set_filter_delivery(
        s, a, "email", "bob filter", "digest", user=u
    ),
    "set_filter_urgent": lambda s, a, u, ids: prefs.set_filter_urgent(
        s, a, "email", "bob filter", True, user=u
    ),
    "pending_notifications": lambda s, a, u, ids: prefs.pending_notifications(s, a, user=u),
    "list_filters": lambda s, a, u, ids: prefs.list_filters(s, a, "email", user=u),
    "get_filter": lambda s, a, u, ids: prefs.get_filter(s, a, "email", "bob filter", user=u),
    "add_filter": lambda s, a, u, ids: prefs.add_filter(s, a, "email", "new", user=u),
    "rename_filter": lambda s, a, u, ids: prefs.rename_filter(
        s, a, "email", "bob filter", "renamed", user=u
    ),
    "remove_filter": lambda s, a, u, ids: prefs.remove_filter(s, a, "email", "bob filter", user=u),
    "move_filter": lambda s, a, u, ids: prefs.move_filter(s, a, "email", "bob filter", 2, user=u),
    "set_filter_active": lambda s, a, u, ids: prefs.set_filter_active(
        s, a, "email", "bob filter", False, user=u
    ),
    "set_filter_oneshot": lambda s, a, u, ids: prefs.set_filter_oneshot(
        s, a, "email", "bob filter", True, user=u
    ),
    "add_rule": lambda s, a, u, ids: prefs.add_rule(
        s, a, "email", "bob filter", "app_is", {"app": "bodhi"}, user=u
    ),
    "remove_rule": lambda s, a, u, ids: prefs.remove_rule(s, a, "email", "bob filter", 1, user=u),
    "set_rule_negated": lambda s, a, u, ids: prefs.set_rule_negated(
        s, a, "email", "bob filter", 1, True, user=u
    ),
    "set_destination": lambda s, a, u, ids: prefs.set_destination(
        s, a, "email", "eve@example.org", user=u
    ),
    "resend_confirmation": lambda s, a, u, ids: prefs.resend_confirmation(s, a, "email", user=u),
    "remove_destination": lambda s, a, u, ids: prefs.remove_destination(
        s, a, "email", ids["confirmed"], user=u
    ),
    "use_template": lambda s, a, u, ids: prefs.use_template(s, a, "quiet", "irc", user=u),
    "preview": lambda s, a, u, ids: prefs.preview(s, a, "email", "bob filter", user=u),
    "recent_notifications": lambda s, a, u, ids: prefs.recent_notifications(s, a, user=u),
    "mute": lambda s, a, u, ids: prefs.mute(s, a, dt.timedelta(hours=1), user=u),
    "unmute": lambda s, a, u, ids: prefs.unmute(s, a, user=u),
    "profile_addresses": lambda s, a, u, ids: prefs.profile_addresses(_bob_profiled(s), a, user=u),
    "explain": lambda s, a, u, ids: prefs.explain(s, a, "m-1", user=u),
    "plan_action": lambda s, a, u, ids: prefs.plan_action(s, a, "m-1", "pause-filter", user=u),
    "act_on_notification": lambda s, a, u, ids: prefs.act_on_notification(
        s, a, "m-1", "pause-filter", user=u
    ),
    "pause_filter": lambda s, a, u, ids: prefs.pause_filter(
        s, a, "email", "bob filter", utcnow() + dt.timedelta(days=1), user=u
    ),
    "revoke_action_links": lambda s, a, u, ids: prefs.revoke_action_links(s, a, user=u),
    "take_notices": lambda s, a, u, ids: prefs.take_notices(s, a, user=u),
}
READS = {
    "list_contexts",
    "get_context",
    "list_filters",
    "get_filter",
    "preview",
    "recent_notifications",
    "pending_notifications",
    "profile_addresses",
    "explain",
    "plan_action",
    "take_notices",
}


@pytest.fixture
def bob(db: Database) -> dict[str, Any]:
    """Bob's preferences: two filters, a confirmed and a pending address (whose
    resend interval has passed), an outbox row, a mute; written in one flush."""
    now = utcnow()
    code = new_code()
    with db.begin() as session:
        user = User(
            name="bob",
            confirm_failures=0,
            muted_until=now + dt.timedelta(hours=3),
            notices=["Your filter 'second' (email) is on again."],
        )
        email = Preference(
            user=user, context="email", enabled=True, digest_minutes=0, digest_count=0
        )
        Filter(
            preference=email,
            name="bob filter",
            position=1,
            rules=[Rule(name="app_is", arguments={"app": "koji"}, position=1)],
        )
        Filter(preference=email, name="second", position=2)
        confirmed = Destination(preference=email, address="bob@example.org", confirmed=True)
        pending = Destination(
            preference=email,
            address="bob2@example.org",
            confirmed=False,
            confirmation=Confirmation(
                secret_hash=hash_code(code),
                outgoing_code=code,
                expires_at=now + dt.timedelta(days=1),
                created_at=now - dt.timedelta(hours=1),
            ),
        )
        message = StoredMessage(
            id="m-1", topic="org.fedoraproject.prod.koji.tag", body={}, headers={}
        )
        session.add_all([user, message])
        session.flush()
        session.add(
            Notification(
                message_id="m-1", user_id=user.id, context="email", filter_name="bob filter"
            )
        )
        session.flush()
        return {"confirmed": confirmed.id, "pending": pending.id, "code": code}


def snapshot(db: Database) -> dict[str, Any]:
    """Everything stored, as plain values, to prove an operation changed nothing."""
    with db.begin() as session:

        def rows(*columns: Any) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in session.execute(select(*columns)))

        return {
            "users": rows(User.name, User.muted_until, User.confirm_failures),
            "preferences": rows(
                Preference.context,
                Preference.enabled,
                Preference.digest_minutes,
                Preference.digest_count,
                Preference.digest_at,
                Preference.digest_timezone,
                Preference.quiet_from,
                Preference.quiet_to,
                Preference.quiet_timezone,
            ),
            "filters": rows(
                Filter.name,
                Filter.active,
                Filter.oneshot,
                Filter.position,
                Filter.delivery,
                Filter.urgent,
            ),
            "rules": rows(Rule.name, Rule.negated, Rule.position),
            "destinations": rows(Destination.id, Destination.address, Destination.confirmed),
            "confirmations": rows(Confirmation.secret_hash, Confirmation.outgoing_code),
            "events": session.scalar(select(func.count()).select_from(ChangeEvent)),
        }


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_authorization_refuses_other_users_data(
    db: Database, bob: dict[str, Any], operation: str
) -> None:
    before = snapshot(db)
    with pytest.raises(PermissionDenied) as caught, db.begin() as session:
        OPERATIONS[operation](session, ALICE, "bob", bob)
    assert "only see and change your own preferences" in str(caught.value)
    assert str(caught.value).endswith(".")
    after = snapshot(db)
    assert after == before
    assert "alice" not in {name for name, *_ in after["users"]}


def each_in_a_rolled_back_transaction(
    db: Database, bob: dict[str, Any], actor: Actor, user: str
) -> None:
    """Run every operation on bob's data as it was made, each in a transaction of
    its own that is rolled back, checking what each one wrote before it goes."""
    before = snapshot(db)
    for operation in sorted(OPERATIONS):
        session = db.sessionmaker()
        try:
            with session.begin():
                result = OPERATIONS[operation](session, actor, user, bob)
                session.flush()
                owners = set(
                    session.scalars(
                        select(User.name).join(ChangeEvent, ChangeEvent.user_id == User.id)
                    )
                )
                users = set(session.scalars(select(User.name)))
                if operation in READS:
                    assert result, f"{operation} found nothing of bob's"
                    assert owners == set(), operation
                else:
                    assert owners == {"bob"}, operation
                assert users == {"bob"}, operation
                session.rollback()
        finally:
            session.close()
    assert snapshot(db) == before


def test_authorization_admin_may_act_for_another_user(db: Database, bob: dict[str, Any]) -> None:
    each_in_a_rolled_back_transaction(db, bob, ADMIN, "bob")


def test_authorization_own_name_as_user_is_allowed(db: Database, bob: dict[str, Any]) -> None:
    each_in_a_rolled_back_transaction(db, bob, BOB, " bob ")


def test_authorization_destination_ids_only_reach_own_rows(
    db: Database, bob: dict[str, Any]
) -> None:
    with db.begin() as session:
        prefs.set_destination(session, ALICE, "email", "alice@example.org")
    before = snapshot(db)
    for destination_id in (bob["confirmed"], bob["pending"]):
        with pytest.raises(NotFound), db.begin() as session:
            prefs.remove_destination(session, ALICE, "email", destination_id)
    assert snapshot(db) == before


def test_authorization_confirm_cannot_use_another_users_code(
    db: Database, bob: dict[str, Any]
) -> None:
    with db.begin() as session:
        prefs.set_destination(session, ALICE, "email", "alice@example.org")
    with db.begin() as session:
        result = prefs.confirm(session, ALICE, bob["code"])
    assert result.outcome is prefs.ConfirmOutcome.WRONG
    assert isinstance(result.error(), ConfirmationFailed)
    with db.begin() as session:
        pending = session.get(Destination, bob["pending"])
        assert pending is not None and not pending.confirmed
        assert pending.confirmation is not None


def test_authorization_reads_show_only_own_data(db: Database, bob: dict[str, Any]) -> None:
    with db.begin() as session:
        contexts = prefs.list_contexts(session, ALICE)
        assert all(not c.filters and not c.destinations for c in contexts)
        assert all(c.muted_until is None for c in contexts)
        assert prefs.list_filters(session, ALICE, "email") == []
        assert prefs.recent_notifications(session, ALICE) == []
        with pytest.raises(NotFound):
            prefs.get_filter(session, ALICE, "email", "bob filter")
        with pytest.raises(NotFound):
            prefs.preview(session, ALICE, "email", "bob filter")


def test_authorization_same_filter_names_stay_separate(db: Database, bob: dict[str, Any]) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "bob filter")
        prefs.remove_filter(session, ALICE, "email", "bob filter")
    with db.begin() as session:
        names = [f.name for f in prefs.list_filters(session, BOB, "email")]
    assert names == ["bob filter", "second"]


def test_authorization_account_names_are_checked(db: Database) -> None:
    with (
        pytest.raises(InvalidArgument, match="not a valid Fedora account name"),
        db.begin() as session,
    ):
        prefs.add_filter(session, ADMIN, "email", "x", user="Bob Smith")
    with pytest.raises(InvalidArgument), db.begin() as session:
        prefs.list_contexts(session, Actor("not valid!"))
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
