"""The preference service (fmn_core.preferences), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.conftest import while_held
from fmn_core import preferences as prefs
from fmn_core.config import ConfirmationConfig, PushConfig
from fmn_core.db import Database
from fmn_core.errors import (
    AlreadyExists,
    ConfirmationFailed,
    InvalidArgument,
    InvalidDestination,
    NotFound,
    RateLimited,
    UnknownContext,
    UnknownRule,
    UserError,
)
from fmn_core.history import MAX_PREVIEW
from fmn_core.matcher import Matcher
from fmn_core.messages import facts_of, load_message
from fmn_core.models import (
    ChangeEvent,
    CodeSend,
    Confirmation,
    Destination,
    Filter,
    Notification,
    PackageOwner,
    Rule,
    StoredMessage,
    User,
    utcnow,
)
from fmn_core.ownership import OwnershipCache
from fmn_core.preferences import Actor
from fmn_core.templates import BUILTIN_TEMPLATES

ALICE = Actor("alice")
BOB = Actor("bob")
CAROL = Actor("carol")


def run(db: Database, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One call as one unit of work, the way front ends do it."""
    with db.begin() as session:
        return function(session, *args, **kwargs)


def fails(
    db: Database, error: type[Exception], function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Exception:
    """Run a call that must raise ``error``; the unit of work is rolled back."""
    with pytest.raises(error) as caught, db.begin() as session:
        function(session, *args, **kwargs)
    return caught.value


def attempt(db: Database, actor: Actor, code: str | None) -> Any:
    """``confirm`` in its own unit of work: the destination, or the refusal as an edge shows it."""
    assert code is not None
    with db.begin() as session:
        try:
            result = prefs.confirm(session, actor, code)
        except UserError as error:
            return error
    return result.error() or result.destination


def count(db: Database, model: type) -> int:
    with db.begin() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def event_kinds(db: Database) -> list[str]:
    with db.begin() as session:
        return list(session.scalars(select(ChangeEvent.kind).order_by(ChangeEvent.id)))


def configure(db: Database, **changes: Any) -> None:
    """Use a changed configuration for the rest of the test."""
    db.config = db.config.replace(**changes)
    db.sessionmaker.configure(info=db.session_info())


def with_filter(
    db: Database,
    name: str = "builds",
    *rules: tuple[str, dict[str, Any], bool],
    actor: Actor = ALICE,
    context: str = "email",
) -> None:
    run(db, prefs.add_filter, actor, context, name)
    for rule, arguments, negated in rules:
        run(db, prefs.add_rule, actor, context, name, rule, arguments, negated=negated)


def assert_sentence(error: Exception) -> None:
    """A user error is one sentence that ends with a full stop."""
    text = str(error)
    assert text and text.endswith(".") and "\n" not in text, text


# --- contexts ----------------------------------------------------------------------


def test_list_contexts_shows_every_offered_context_without_creating_the_user(db: Database) -> None:
    views = run(db, prefs.list_contexts, ALICE)
    assert [v.context for v in views] == list(db.config.contexts)
    assert all(v.enabled and v.filters == () and v.destinations == () for v in views)
    assert count(db, User) == 0 and event_kinds(db) == []


def test_list_contexts_follows_the_configured_contexts(db: Database) -> None:
    configure(db, contexts=("email", "irc"))
    assert [v.context for v in run(db, prefs.list_contexts, ALICE)] == ["email", "irc"]
    error = fails(db, UnknownContext, prefs.get_context, ALICE, "push")
    assert "choose one of: email, irc" in str(error)
    assert_sentence(error)


def test_get_context_normalizes_the_name(db: Database) -> None:
    assert run(db, prefs.get_context, ALICE, " Email ").context == "email"


def test_set_context_enabled_creates_user_lazily_and_records_event(db: Database) -> None:
    view = run(db, prefs.set_context_enabled, ALICE, "irc", False)
    assert view.context == "irc" and view.enabled is False
    assert run(db, prefs.get_context, ALICE, "irc").enabled is False
    assert run(db, prefs.get_context, ALICE, "email").enabled is True
    assert count(db, User) == 1 and event_kinds(db) == ["context"]
    fails(db, InvalidArgument, prefs.set_context_enabled, ALICE, "irc", "yes")


def test_set_digest_sets_and_clears(db: Database) -> None:
    view = run(db, prefs.set_digest, ALICE, "email", 60, 10)
    assert (view.digest_minutes, view.digest_count) == (60, 10)
    view = run(db, prefs.set_digest, ALICE, "email", 0, 0)
    assert (view.digest_minutes, view.digest_count) == (0, 0)
    assert event_kinds(db) == ["digest", "digest"]


def test_set_digest_rejects_out_of_range(db: Database) -> None:
    for minutes, digest_count in [
        (-1, 0),
        (0, -5),
        (10**6, 0),
        (0, 10**6),
        (True, 0),
        ("60", 0),
        (1.5, 0),
    ]:
        error = fails(db, InvalidArgument, prefs.set_digest, ALICE, "email", minutes, digest_count)
        assert "whole number from 0 to" in str(error)
    assert count(db, User) == 0


# --- filters -----------------------------------------------------------------------


def test_add_filter_appends_in_order_and_strips_the_name(db: Database) -> None:
    first = run(db, prefs.add_filter, ALICE, "email", "  builds  ")
    second = run(db, prefs.add_filter, ALICE, "email", "updates", oneshot=True)
    assert (first.name, first.position, first.active, first.oneshot) == ("builds", 1, True, False)
    assert (second.name, second.position, second.oneshot) == ("updates", 2, True)
    names = [f.name for f in run(db, prefs.list_filters, ALICE, "email")]
    assert names == ["builds", "updates"]
    assert run(db, prefs.list_filters, ALICE, "irc") == []
    assert event_kinds(db) == ["filter", "filter"]


def test_add_filter_rejects_duplicate_names_case_insensitively(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "Builds")
    error = fails(db, AlreadyExists, prefs.add_filter, ALICE, "email", "builds")
    assert "choose another name" in str(error)
    assert_sentence(error)
    # Another context has its own names.
    run(db, prefs.add_filter, ALICE, "irc", "builds")
    assert count(db, Filter) == 2


BAD_FILTER_NAMES = [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("x" * 101, "at most 100"),
    ("two\nlines", "control characters"),
    ("nul\x00byte", "control characters"),
    ("bell\x07", "control characters"),
    ("\u202eevil", "control characters"),
    (None, "must be text"),
]


def test_add_filter_rejects_bad_names_and_writes_nothing(db: Database) -> None:
    for name, reason in BAD_FILTER_NAMES:
        error = fails(db, InvalidArgument, prefs.add_filter, ALICE, "email", name)
        assert reason in str(error), name
        assert_sentence(error)
    assert count(db, User) == 0 and count(db, Filter) == 0 and event_kinds(db) == []


def test_add_filter_accepts_a_hundred_character_unicode_name(db: Database) -> None:
    name = "ü" * 99 + "🙂"
    assert run(db, prefs.add_filter, ALICE, "email", name).name == name


def test_get_filter_finds_by_exact_then_case_insensitive_name(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "My Builds")
    assert run(db, prefs.get_filter, ALICE, "email", "My Builds").name == "My Builds"
    assert run(db, prefs.get_filter, ALICE, "email", "my builds").name == "My Builds"
    error = fails(db, NotFound, prefs.get_filter, ALICE, "email", "nope")
    assert "list your filters" in str(error)
    assert_sentence(error)
    fails(db, NotFound, prefs.get_filter, BOB, "email", "My Builds")


def test_rename_filter_renames_and_refuses_taken_names(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "a")
    run(db, prefs.add_filter, ALICE, "email", "b")
    assert run(db, prefs.rename_filter, ALICE, "email", "a", "c").name == "c"
    assert run(db, prefs.rename_filter, ALICE, "email", "c", "C").name == "C"
    fails(db, AlreadyExists, prefs.rename_filter, ALICE, "email", "C", "B")
    fails(db, InvalidArgument, prefs.rename_filter, ALICE, "email", "C", "")
    fails(db, NotFound, prefs.rename_filter, ALICE, "email", "zzz", "y")
    assert [f.name for f in run(db, prefs.list_filters, ALICE, "email")] == ["C", "b"]


def test_remove_filter_deletes_rules_and_renumbers(db: Database) -> None:
    for name in ("a", "b", "c"):
        with_filter(db, name, ("app_is", {"app": "koji"}, False))
    run(db, prefs.remove_filter, ALICE, "email", "b")
    views = run(db, prefs.list_filters, ALICE, "email")
    assert [(f.name, f.position) for f in views] == [("a", 1), ("c", 2)]
    assert count(db, Rule) == 2
    fails(db, NotFound, prefs.remove_filter, ALICE, "email", "b")


def test_move_filter_reorders(db: Database) -> None:
    for name in ("a", "b", "c", "d"):
        run(db, prefs.add_filter, ALICE, "email", name)
    views = run(db, prefs.move_filter, ALICE, "email", "d", 1)
    assert [(f.name, f.position) for f in views] == [("d", 1), ("a", 2), ("b", 3), ("c", 4)]
    views = run(db, prefs.move_filter, ALICE, "email", "d", 4)
    assert [f.name for f in views] == ["a", "b", "c", "d"]
    assert [f.name for f in run(db, prefs.list_filters, ALICE, "email")] == ["a", "b", "c", "d"]


def test_move_filter_refuses_positions_out_of_range(db: Database) -> None:
    for name in ("a", "b", "c", "d"):
        run(db, prefs.add_filter, ALICE, "email", name)
    for position in (0, 5, -1, True, "2"):
        error = fails(db, InvalidArgument, prefs.move_filter, ALICE, "email", "a", position)
        assert "from 1 to 4" in str(error)
    assert event_kinds(db) == ["filter"] * 4


def test_set_filter_active_and_oneshot(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "a")
    assert run(db, prefs.set_filter_active, ALICE, "email", "a", False).active is False
    assert run(db, prefs.set_filter_oneshot, ALICE, "email", "a", True).oneshot is True
    view = run(db, prefs.get_filter, ALICE, "email", "a")
    assert (view.active, view.oneshot) == (False, True)
    fails(db, InvalidArgument, prefs.set_filter_active, ALICE, "email", "a", 0)
    assert event_kinds(db) == ["filter", "filter", "filter"]


# --- rules -------------------------------------------------------------------------


def test_add_rule_validates_normalizes_and_describes(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "f")
    view = run(db, prefs.add_rule, ALICE, "email", "f", "app_is", {"app": "koji"}, negated=True)
    view = run(db, prefs.add_rule, ALICE, "email", "f", "severity_at_least", {"level": "error"})
    assert [(r.number, r.name, r.negated) for r in view.rules] == [
        (1, "app_is", True),
        (2, "severity_at_least", False),
    ]
    assert view.rules[0].text == "not app_is app=koji"
    assert view.rules[0].title == "Application is"
    assert view.rules[1].arguments == {"level": "ERROR"}
    assert event_kinds(db) == ["filter", "rule", "rule"]


def test_add_rule_accepts_module_function_references(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "f")
    view = run(db, prefs.add_rule, ALICE, "email", "f", "fmn_core.catalog:pertains_to_me", {})
    assert view.rules[0].name == "pertains_to_me"


def test_add_rule_errors_name_the_problem_and_write_nothing(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "f")
    error = fails(db, UnknownRule, prefs.add_rule, ALICE, "email", "f", "app_iz", {"app": "x"})
    assert "list the available rules" in str(error)
    error = fails(db, InvalidArgument, prefs.add_rule, ALICE, "email", "f", "app_is", {})
    assert "app_is needs app=" in str(error)
    error = fails(
        db,
        InvalidArgument,
        prefs.add_rule,
        ALICE,
        "email",
        "f",
        "app_is",
        {"app": "koji", "colour": "red"},
    )
    assert "does not take colour" in str(error)
    fails(
        db,
        InvalidArgument,
        prefs.add_rule,
        ALICE,
        "email",
        "f",
        "package_involved",
        {"package": "a b"},
    )
    fails(db, NotFound, prefs.add_rule, ALICE, "email", "nope", "app_is", {"app": "koji"})
    assert count(db, Rule) == 0 and event_kinds(db) == ["filter"]


def test_add_rule_refuses_the_same_rule_twice_and_too_many_rules(db: Database) -> None:
    with_filter(db, "f", ("app_is", {"app": "koji"}, False))
    fails(db, AlreadyExists, prefs.add_rule, ALICE, "email", "f", "app_is", {"app": "koji"})
    # Negated it is another rule.
    run(db, prefs.add_rule, ALICE, "email", "f", "app_is", {"app": "koji"}, negated=True)
    for number in range(18):
        run(db, prefs.add_rule, ALICE, "email", "f", "package_involved", {"package": f"p{number}"})
    error = fails(
        db, InvalidArgument, prefs.add_rule, ALICE, "email", "f", "app_is", {"app": "bodhi"}
    )
    assert "already has 20 rules" in str(error)


def test_remove_rule_renumbers(db: Database) -> None:
    with_filter(
        db,
        "f",
        ("app_is", {"app": "koji"}, False),
        ("pertains_to_me", {}, False),
        ("triggered_by_me", {}, True),
    )
    view = run(db, prefs.remove_rule, ALICE, "email", "f", 2)
    assert [(r.number, r.name) for r in view.rules] == [(1, "app_is"), (2, "triggered_by_me")]
    error = fails(db, NotFound, prefs.remove_rule, ALICE, "email", "f", 3)
    assert "has no rule 3; it has 2 rules" in str(error)
    fails(db, NotFound, prefs.remove_rule, ALICE, "email", "f", 0)


def test_set_rule_negated(db: Database) -> None:
    with_filter(db, "f", ("triggered_by_me", {}, False))
    view = run(db, prefs.set_rule_negated, ALICE, "email", "f", 1, True)
    assert view.rules[0].negated and view.rules[0].text == "not triggered_by_me"
    assert run(db, prefs.set_rule_negated, ALICE, "email", "f", 1, False).rules[0].negated is False
    fails(db, NotFound, prefs.set_rule_negated, ALICE, "email", "f", 2, True)


def test_views_are_frozen_copies_usable_after_the_session(db: Database) -> None:
    with_filter(db, "f", ("app_is", {"app": "koji"}, False))
    with db.begin() as session:
        view = prefs.get_context(session, ALICE, "email")
    session.close()
    assert view.filters[0].rules[0].text == "app_is app=koji"
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.enabled = False  # type: ignore[misc]


# --- destinations and confirmation -------------------------------------------------


def add_email(
    db: Database, address: str = "alice@example.org", actor: Actor = ALICE
) -> prefs.PendingConfirmation:
    pending: prefs.PendingConfirmation = run(db, prefs.set_destination, actor, "email", address)
    return pending


def test_set_destination_email_is_pending_with_a_code(db: Database) -> None:
    pending = add_email(db, "Alice@Example.ORG")
    view = pending.destination
    assert view.address == "Alice@example.org" and view.masked == "A***e@example.org"
    assert (view.confirmed, view.pending) == (False, True)
    assert view.expires_at is not None
    expected = utcnow() + dt.timedelta(minutes=db.config.confirmation.ttl_minutes)
    assert abs((view.expires_at - expected).total_seconds()) < 60
    assert pending.code is not None and len(pending.code) == 8
    assert "alice" not in repr(pending).lower() and pending.code not in repr(pending)
    with db.begin() as session:
        row = session.scalars(select(Confirmation)).one()
        assert row.secret_hash != pending.code and pending.code not in row.secret_hash
        assert row.outgoing_code == pending.code
    assert event_kinds(db) == ["destination"]


def test_set_destination_refuses_invalid_addresses_per_context(db: Database) -> None:
    error = fails(db, InvalidDestination, prefs.set_destination, ALICE, "email", "Alice <a@b.org>")
    assert_sentence(error)
    fails(db, InvalidDestination, prefs.set_destination, ALICE, "irc", "9lives")
    error = fails(
        db,
        InvalidDestination,
        prefs.set_destination,
        ALICE,
        "push",
        "gotifys://169.254.169.254/latest",
    )
    assert "link-local" in str(error)
    fails(
        db,
        InvalidDestination,
        prefs.set_destination,
        ALICE,
        "android",
        "ntfys://ntfy.sh/t?attach=/etc/passwd",
    )
    fails(db, UnknownContext, prefs.set_destination, ALICE, "fax", "123")
    assert count(db, Destination) == 0 and count(db, User) == 0


def test_set_destination_push_accepts_a_public_url(db: Database) -> None:
    pending = run(db, prefs.set_destination, ALICE, "push", "ntfys://93.184.216.34/alice-topic")
    assert pending.destination.masked == "ntfys://93.184.216.34/al***"
    assert pending.code is not None and not pending.destination.confirmed


@pytest.mark.parametrize(
    "url", ["json://push.example.org/hook?method=PUT&+X-A=b", "jsons://push.example.org/hook"]
)
def test_set_destination_json_push_url_refused_by_default(db: Database, url: str) -> None:
    error = fails(db, InvalidDestination, prefs.set_destination, ALICE, "push", url)
    assert "is not allowed here" in str(error)
    assert count(db, Destination) == 0
    schemes = (*PushConfig().allowed_schemes, "json", "jsons")
    configure(db, push=PushConfig(allowed_schemes=schemes))
    assert run(db, prefs.set_destination, ALICE, "push", url).destination.pending


def test_set_destination_honours_allow_private_hosts(db: Database) -> None:
    configure(db, push=PushConfig(allow_private_hosts=True))
    pending = run(db, prefs.set_destination, ALICE, "push", "ntfy://127.0.0.1:9000/topic")
    assert pending.destination.pending


@pytest.mark.parametrize("context", ["rss", "live"])
def test_set_destination_feed_gets_a_confirmed_token(db: Database, context: str) -> None:
    first = run(db, prefs.set_destination, ALICE, context, "")
    second = run(db, prefs.set_destination, ALICE, context, "ignored")
    assert first.code is None and first.destination.confirmed and not first.destination.pending
    assert len(first.destination.address) >= 32
    assert first.destination.address != second.destination.address
    assert first.destination.masked == first.destination.address[:2] + "***"
    assert count(db, Confirmation) == 0


def test_set_destination_irc_is_confirmed_through_a_code(db: Database) -> None:
    pending = run(db, prefs.set_destination, ALICE, "irc", "alice_")
    outgoing = run(db, prefs.pending_confirmation_codes, ["irc"])
    assert [(o.user, o.context, o.address, o.code) for o in outgoing] == [
        ("alice", "irc", "alice_", pending.code)
    ]
    assert run(db, prefs.pending_confirmation_codes, ["email"]) == []
    assert attempt(db, ALICE, pending.code).confirmed is True


def test_set_destination_again_for_a_pending_address_makes_a_new_code(db: Database) -> None:
    configure(db, confirmation=ConfirmationConfig(resend_interval_seconds=0))
    first = add_email(db)
    second = add_email(db)
    assert second.destination.id == first.destination.id and second.code != first.code
    assert count(db, Destination) == 1
    assert isinstance(attempt(db, ALICE, first.code), ConfirmationFailed)
    assert attempt(db, ALICE, second.code).confirmed
    error = fails(db, AlreadyExists, prefs.set_destination, ALICE, "email", "alice@example.org")
    assert "a***e@example.org is already a confirmed destination" in str(error)


def test_set_destination_limits_pending_addresses(db: Database) -> None:
    for number in range(prefs.MAX_PENDING_PER_CONTEXT):
        add_email(db, f"alice{number}@example.org")
    error = fails(db, RateLimited, prefs.set_destination, ALICE, "email", "more@example.org")
    assert "confirm or remove one first" in str(error)


def test_confirm_is_case_insensitive_single_use_and_resets_failures(db: Database) -> None:
    pending = add_email(db)
    assert pending.code is not None
    assert isinstance(attempt(db, ALICE, "WRONGCOD"), ConfirmationFailed)
    typed = " ".join([pending.code[:4].lower(), pending.code[4:].lower()])
    view = attempt(db, ALICE, typed)
    assert isinstance(view, prefs.DestinationView)
    assert view.confirmed and not view.pending and view.expires_at is None
    assert count(db, Confirmation) == 0
    with db.begin() as session:
        user = session.scalars(select(User)).one()
        assert user.confirm_failures == 0
    again = attempt(db, ALICE, pending.code)
    assert isinstance(again, ConfirmationFailed)
    assert "nothing waiting for confirmation" in str(again)
    assert run(db, prefs.get_context, ALICE, "email").destinations[0].confirmed
    assert event_kinds(db) == ["destination", "confirmation"]


def test_confirm_wrong_code_says_what_to_do_and_counts(db: Database) -> None:
    add_email(db)
    error = attempt(db, ALICE, "abcd-efgh")
    assert isinstance(error, ConfirmationFailed)
    assert "'ABCDEFGH' is wrong or was already used; check it, or ask for a new code" in str(error)
    assert_sentence(error)
    with db.begin() as session:
        assert session.scalars(select(User.confirm_failures)).one() == 1


def test_confirm_expired_code_asks_for_a_new_one(db: Database) -> None:
    pending = add_email(db)
    with db.begin() as session:
        session.execute(update(Confirmation).values(expires_at=utcnow() - dt.timedelta(minutes=1)))
    error = attempt(db, ALICE, pending.code)
    assert isinstance(error, ConfirmationFailed)
    assert "expired; ask for a new code" in str(error)
    assert run(db, prefs.pending_confirmation_codes) == []
    assert not run(db, prefs.get_context, ALICE, "email").destinations[0].confirmed


def test_confirm_locks_out_after_max_failures(db: Database) -> None:
    configure(db, confirmation=ConfirmationConfig(max_failures=3, lockout_minutes=15))
    pending = add_email(db)
    results = [attempt(db, ALICE, f"WRONG{n:03d}") for n in range(3)]
    assert [type(r) for r in results] == [ConfirmationFailed, ConfirmationFailed, RateLimited]
    assert "wait 15 minutes" in str(results[-1])
    # Locked: even the right code is refused, and nothing is confirmed.
    locked = attempt(db, ALICE, pending.code)
    assert isinstance(locked, RateLimited) and "UTC, then try again" in str(locked)
    assert count(db, Confirmation) == 1
    # Once the lockout has passed, the right code works.
    with db.begin() as session:
        session.execute(update(User).values(confirm_locked_until=utcnow() - dt.timedelta(1)))
    assert attempt(db, ALICE, pending.code).confirmed


def test_confirm_wrong_guess_is_an_outcome_kept_by_a_plain_unit_of_work(db: Database) -> None:
    # A wrong guess is returned, not raised: the caller's ordinary unit of work
    # commits the count, so no front end needs a workaround to keep it.
    add_email(db)
    result = run(db, prefs.confirm, ALICE, "WRONGCOD")
    assert result.outcome is prefs.ConfirmOutcome.WRONG and not result.confirmed
    assert result.destination is None and result.locked_until is None
    assert isinstance(result.error(), ConfirmationFailed)
    with db.begin() as session:
        assert session.scalars(select(User.confirm_failures)).one() == 1


def test_confirm_outcomes_say_expired_and_locked_until(db: Database) -> None:
    configure(db, confirmation=ConfirmationConfig(max_failures=2, lockout_minutes=15))
    pending = add_email(db)
    with db.begin() as session:
        session.execute(update(Confirmation).values(expires_at=utcnow() - dt.timedelta(minutes=1)))
    expired = run(db, prefs.confirm, ALICE, pending.code)
    assert expired.outcome is prefs.ConfirmOutcome.EXPIRED and "expired" in expired.message
    assert run(db, prefs.confirm, ALICE, "WRONG001").outcome is prefs.ConfirmOutcome.WRONG
    before = utcnow()
    locked = run(db, prefs.confirm, ALICE, "WRONG002")
    assert locked.outcome is prefs.ConfirmOutcome.LOCKED
    assert locked.locked_until is not None
    assert (
        before + dt.timedelta(minutes=14)
        < locked.locked_until
        <= utcnow() + dt.timedelta(minutes=15)
    )
    again = run(db, prefs.confirm, ALICE, pending.code)
    assert again.outcome is prefs.ConfirmOutcome.LOCKED
    assert again.locked_until == locked.locked_until
    assert isinstance(again.error(), RateLimited)


def test_confirm_only_matches_the_actors_own_codes(db: Database) -> None:
    bob_code = add_email(db, "bob@example.org", actor=BOB).code
    add_email(db)
    assert isinstance(attempt(db, ALICE, bob_code), ConfirmationFailed)
    assert not run(db, prefs.get_context, BOB, "email").destinations[0].confirmed
    assert attempt(db, BOB, bob_code).confirmed


def test_resend_confirmation_regenerates_and_is_rate_limited(db: Database) -> None:
    first = add_email(db)
    error = fails(db, RateLimited, prefs.resend_confirmation, ALICE, "email")
    assert "wait" in str(error) and "seconds" in str(error)
    with db.begin() as session:
        session.execute(
            update(Confirmation).values(
                created_at=utcnow() - dt.timedelta(seconds=61), outgoing_code=None
            )
        )
        # The interval is kept per address in the code-sending log (code_limits).
        session.execute(update(CodeSend).values(created_at=utcnow() - dt.timedelta(seconds=61)))
    second = run(db, prefs.resend_confirmation, ALICE, "email")
    assert second.code != first.code and second.destination.id == first.destination.id
    assert [o.code for o in run(db, prefs.pending_confirmation_codes)] == [second.code]
    assert isinstance(attempt(db, ALICE, first.code), ConfirmationFailed)
    assert attempt(db, ALICE, second.code).confirmed
    error = fails(db, NotFound, prefs.resend_confirmation, ALICE, "email")
    assert "set a destination first" in str(error)


def test_pending_codes_are_sent_once(db: Database) -> None:
    pending = add_email(db)
    outgoing = run(db, prefs.pending_confirmation_codes)
    assert len(outgoing) == 1 and outgoing[0].code == pending.code and pending.code
    assert outgoing[0].destination_id == pending.destination.id
    assert pending.code not in repr(outgoing[0]) and "alice@" not in repr(outgoing[0])
    assert run(db, prefs.mark_code_sent, pending.destination.id) is True
    assert run(db, prefs.pending_confirmation_codes) == []
    with db.begin() as session:
        row = session.scalars(select(Confirmation)).one()
        assert row.outgoing_code is None and row.sent_count == 1 and row.last_sent_at
    # The code still works after it has been sent (only its clear text is gone).
    assert attempt(db, ALICE, pending.code).confirmed
    assert run(db, prefs.mark_code_sent, pending.destination.id) is False


def test_remove_destination(db: Database) -> None:
    pending = add_email(db)
    other = add_email(db, "alice2@example.org")
    run(db, prefs.remove_destination, ALICE, "email", pending.destination.id)
    view = run(db, prefs.get_context, ALICE, "email")
    assert [d.id for d in view.destinations] == [other.destination.id]
    assert count(db, Confirmation) == 1
    error = fails(db, NotFound, prefs.remove_destination, ALICE, "email", pending.destination.id)
    assert_sentence(error)
    # The id is only looked for in the context named.
    fails(db, NotFound, prefs.remove_destination, ALICE, "irc", other.destination.id)


# --- templates ---------------------------------------------------------------------


def test_use_template_copies_filters_and_refuses_clashes(db: Database) -> None:
    run(db, prefs.add_filter, ALICE, "email", "mine")
    views = run(db, prefs.use_template, ALICE, "quiet", "email")
    assert [f.name for f in views] == [
        "mine",
        "failed builds of my packages",
        "errors that concern me",
    ]
    assert [f.position for f in views] == [1, 2, 3]
    assert views[2].rules[1].arguments == {"level": "ERROR"}
    error = fails(db, AlreadyExists, prefs.use_template, ALICE, "quiet", "email")
    assert "rename or remove it" in str(error)
    error = fails(db, NotFound, prefs.use_template, ALICE, "nope", "email")
    assert "packager" in str(error)
    assert event_kinds(db) == ["filter", "template"]


# --- preview and history -----------------------------------------------------------


def store_corpus(
    db: Database, corpus: list[str], keep: Callable[[str], bool], most: int | None = None
) -> list[tuple[str, Any]]:
    """The loadable corpus messages whose topic ``keep`` takes (at most ``most``), stored a
    second apart, the newest an hour ago; (id, facts), oldest first."""
    chosen: dict[str, tuple[dict[str, Any], Any]] = {}
    for line in corpus:
        data = json.loads(line)
        if not keep(data["topic"]) or data["id"] in chosen:
            continue
        try:
            facts = facts_of(load_message(data))
        except Exception:  # only loadable messages make good fixtures
            continue
        chosen[data["id"]] = (data, facts)
        if len(chosen) == most:
            break
    start = utcnow() - dt.timedelta(hours=1)
    with db.begin() as session:
        for number, (data, _) in enumerate(chosen.values()):
            session.add(
                StoredMessage(
                    id=data["id"],
                    topic=data["topic"],
                    body=data["body"],
                    headers=data["headers"],
                    received_at=start + dt.timedelta(seconds=number),
                )
            )
    return [(message_id, facts) for message_id, (_, facts) in chosen.items()]


@pytest.fixture
def stored(db: Database, corpus: list[str]) -> list[tuple[str, Any]]:
    """Forty bodhi, koji and pagure corpus messages stored a second apart, oldest first."""
    return store_corpus(
        db, corpus, lambda topic: any(app in topic for app in ("bodhi", "koji", "pagure")), 40
    )


def test_preview_evaluates_the_filter_newest_first(
    db: Database, stored: list[tuple[str, Any]]
) -> None:
    with_filter(db, "bodhi", ("app_is", {"app": "bodhi"}, False))
    hits = run(db, prefs.preview, ALICE, "email", "bodhi")
    expected = [mid for mid, facts in reversed(stored) if facts.app_name.lower() == "bodhi"]
    assert 0 < len(expected) < len(stored)
    assert [h.message_id for h in hits] == expected
    assert all(h.received_at.tzinfo is not None for h in hits)
    limited = run(db, prefs.preview, ALICE, "email", "bodhi", limit=10)
    newest = {mid for mid, _ in stored[-10:]}
    assert [h.message_id for h in limited] == [m for m in expected if m in newest]


def test_preview_applies_negation_and_and(db: Database, stored: list[tuple[str, Any]]) -> None:
    with_filter(db, "not bodhi", ("app_is", {"app": "bodhi"}, True))
    hits = run(db, prefs.preview, ALICE, "email", "not bodhi")
    expected = [mid for mid, facts in reversed(stored) if facts.app_name.lower() != "bodhi"]
    assert [h.message_id for h in hits] == expected
    user = next(iter(sorted(u for _, f in stored for u in f.usernames)))
    with_filter(
        db,
        "both",
        ("app_is", {"app": "bodhi"}, False),
        ("user_involved", {"username": user}, False),
    )
    hits = run(db, prefs.preview, ALICE, "email", "both")
    assert [h.message_id for h in hits] == [
        mid for mid, f in reversed(stored) if f.app_name.lower() == "bodhi" and user in f.usernames
    ]


def test_preview_uses_package_ownership(db: Database, stored: list[tuple[str, Any]]) -> None:
    package = next(p for _, f in stored for p in sorted(f.packages))
    with db.begin() as session:
        session.add(PackageOwner(namespace="rpms", package=package, owner="alice"))
    with_filter(db, "mine", ("package_owned_by_me", {}, False))
    hits = run(db, prefs.preview, ALICE, "email", "mine")
    assert [h.message_id for h in hits] == [
        mid for mid, f in reversed(stored) if package in f.packages
    ]
    assert hits
    # The same filter for someone who owns nothing matches nothing.
    with_filter(db, "mine", ("package_owned_by_me", {}, False), actor=BOB)
    assert run(db, prefs.preview, BOB, "email", "mine") == []


def test_preview_reads_ownership_as_the_daemon_does_in_a_few_queries(
    db: Database, corpus: list[str]
) -> None:
    """A preview reads only the ownership rows its filter and messages ask about, the
    messages' packages in a few queries, and matches what the daemon's matcher, which
    loads the whole table, matches."""
    from sqlalchemy import event

    stored = [facts for _, facts in store_corpus(db, corpus, lambda _topic: True)]
    packages = sorted({p for f in stored for p in f.packages})
    assert len(packages) > 30, "the corpus must name packages"
    with db.begin() as session:
        session.add_all(
            [PackageOwner(namespace="rpms", package=p, owner="alice") for p in packages[::2]]
            + [PackageOwner(namespace="rpms", package=p, owner="@maint") for p in packages[::3]]
            # Another namespace's owners do not count for a message's (rpm) packages.
            + [PackageOwner(namespace="modules", package=p, owner="alice") for p in packages[1::2]]
        )
    with_filter(db, "mine", ("package_owned_by_me", {}, False))
    # One filter a user: the daemon's answer names a user's first matching filter only.
    with_filter(
        db, "the group's", ("package_owned_by_group", {"group": "maint"}, False), actor=CAROL
    )
    with_filter(
        db,
        "all but alice's",
        ("topic_matches", {"pattern": "*"}, False),
        ("package_owned_by", {"username": "alice"}, True),
        actor=BOB,
    )
    with db.begin() as session:
        matcher = Matcher.load(session, ownership=OwnershipCache.load(session))
    reads: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "package_owners" in statement:
            reads.append(statement)

    for actor, name in ((ALICE, "mine"), (CAROL, "the group's"), (BOB, "all but alice's")):
        reads.clear()
        event.listen(db.engine, "before_cursor_execute", note)
        try:
            hits = run(db, prefs.preview, actor, "email", name, limit=MAX_PREVIEW)
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
        matched = [
            f.id
            for f in reversed(stored)
            if any(r.filter_name == name for r in matcher.recipients(f))
        ][:MAX_PREVIEW]
        assert [h.message_id for h in hits] == matched, name
        assert 0 < len(matched) < len(stored), name
        # Never the whole table, and not a query per package.
        assert reads and all("WHERE" in statement for statement in reads), reads
        assert len(reads) <= 2 + len(packages) // 500, (name, len(reads))


def test_preview_of_an_empty_filter_matches_nothing(
    db: Database, stored: list[tuple[str, Any]]
) -> None:
    run(db, prefs.add_filter, ALICE, "email", "empty")
    assert run(db, prefs.preview, ALICE, "email", "empty") == []
    fails(db, InvalidArgument, prefs.preview, ALICE, "email", "empty", limit=0)
    fails(db, NotFound, prefs.preview, ALICE, "email", "missing")


def test_preview_and_matcher_agree_on_filters_the_matcher_skips(
    db: Database, stored: list[tuple[str, Any]]
) -> None:
    # One evaluator: a filter with a rule that is not installed, or with stored
    # arguments no longer valid, matches nothing in the daemon's matcher, and so in
    # the preview (which used to raise on both). A sound filter agrees as well.
    with_filter(db, "sound", ("app_is", {"app": "bodhi"}, False), context="email")
    with_filter(db, "gone", ("app_is", {"app": "bodhi"}, False), context="irc")
    with_filter(db, "stale", ("app_is", {"app": "bodhi"}, False), context="rss")
    with db.begin() as session:
        gone = session.scalars(select(Filter).where(Filter.name == "gone")).one()
        session.execute(update(Rule).where(Rule.filter_id == gone.id).values(name="uninstalled"))
        stale = session.scalars(select(Filter).where(Filter.name == "stale")).one()
        session.execute(update(Rule).where(Rule.filter_id == stale.id).values(arguments={}))
    with db.begin() as session:
        matcher = Matcher.load(session, ownership=OwnershipCache.load(session))
    for context, name in (("email", "sound"), ("irc", "gone"), ("rss", "stale")):
        previewed = [h.message_id for h in run(db, prefs.preview, ALICE, context, name)]
        matched = [
            mid
            for mid, facts in reversed(stored)
            if any(
                r.context == context and r.filter_name == name for r in matcher.recipients(facts)
            )
        ]
        assert previewed == matched, (context, name)
        assert bool(matched) == (name == "sound")


def test_recent_notifications_lists_the_users_outbox(
    db: Database, stored: list[tuple[str, Any]]
) -> None:
    with_filter(db, "f", ("app_is", {"app": "koji"}, False))
    add_email(db, "bob@example.org", actor=BOB)
    now = utcnow()
    with db.begin() as session:
        alice = session.scalars(select(User).where(User.name == "alice")).one()
        bob = session.scalars(select(User).where(User.name == "bob")).one()
        for number, (mid, _) in enumerate(stored[:5]):
            session.add(
                Notification(
                    message_id=mid,
                    user_id=alice.id,
                    context="email" if number % 2 else "irc",
                    filter_name="f",
                    state="sent" if number < 2 else "pending",
                    created_at=now + dt.timedelta(seconds=number),
                    sent_at=now if number < 2 else None,
                )
            )
        session.add(
            Notification(
                message_id=stored[6][0],
                user_id=bob.id,
                context="email",
                filter_name="g",
                created_at=now,
            )
        )
    views = run(db, prefs.recent_notifications, ALICE)
    assert [v.message_id for v in views] == [mid for mid, _ in reversed(stored[:5])]
    assert views[-1].state == "sent" and views[-1].sent_at is not None
    assert views[0].summary == stored[4][1].summary and views[0].topic
    emails = run(db, prefs.recent_notifications, ALICE, context="email", limit=1)
    assert [v.message_id for v in emails] == [stored[3][0]]
    assert [v.filter_name for v in run(db, prefs.recent_notifications, BOB)] == ["g"]
    assert run(db, prefs.recent_notifications, Actor("carol")) == []
    fails(db, InvalidArgument, prefs.recent_notifications, ALICE, limit=0)


# --- muting ------------------------------------------------------------------------


def test_mute_and_unmute(db: Database) -> None:
    until = run(db, prefs.mute, ALICE, dt.timedelta(hours=2))
    assert dt.timedelta(minutes=119) < until - utcnow() <= dt.timedelta(hours=2)
    assert run(db, prefs.get_context, ALICE, "email").muted_until == until
    later = utcnow() + dt.timedelta(days=1)
    assert run(db, prefs.mute, ALICE, later) == later
    run(db, prefs.unmute, ALICE)
    assert run(db, prefs.get_context, ALICE, "irc").muted_until is None
    assert event_kinds(db) == ["mute", "mute", "mute"]


def test_mute_refuses_bad_times(db: Database) -> None:
    for until in (
        dt.timedelta(hours=-1),
        dt.timedelta(days=400),
        dt.datetime(2030, 1, 1),
        "tomorrow",
    ):
        error = fails(db, InvalidArgument, prefs.mute, ALICE, until)
        assert_sentence(error)
    assert count(db, User) == 0


# --- two writers at once -------------------------------------------------------------
#
# The TUI (through the gateway), the bot, the HTTP links and the daemons write the
# same account at once, in processes of their own. These tests need units that
# commit for real on connections of their own, so they use a database of their
# own rather than the rolled-back ``db`` fixture. ``while_held`` makes the race
# deterministic: the second unit starts while the first is open and uncommitted,
# and the first commits once the second waits for it (or has finished).


def test_two_first_writes_of_a_new_account_both_count(committed: Database) -> None:
    # The bot and the TUI both creating alice's user row: not a unique violation.
    _, second = while_held(
        committed,
        lambda s: prefs.add_filter(s, ALICE, "email", "one"),
        lambda s: prefs.add_filter(s, ALICE, "email", "two"),
    )
    assert not isinstance(second, Exception), second
    views = run(committed, prefs.list_filters, ALICE, "email")
    assert [(v.name, v.position) for v in views] == [("one", 1), ("two", 2)]


def test_an_import_beside_a_front_end_creating_the_account_is_not_an_error(
    committed: Database,
) -> None:
    # The operator imports alice while the bot creates her account: not a unique
    # violation; the import, last, gives her the file's filters.
    from fmn_core.portability import import_preferences

    document = {"users": [{"name": "alice", "contexts": {"email": {"filters": []}}}]}
    _, second = while_held(
        committed,
        lambda s: prefs.add_filter(s, ALICE, "email", "from the bot"),
        lambda s: import_preferences(s, document),
    )
    assert not isinstance(second, Exception), second
    assert run(committed, prefs.list_filters, ALICE, "email") == []


def test_one_filter_name_added_twice_at_once_is_refused_in_words(committed: Database) -> None:
    run(committed, prefs.add_filter, ALICE, "email", "first")
    _, second = while_held(
        committed,
        lambda s: prefs.add_filter(s, ALICE, "email", "same"),
        lambda s: prefs.add_filter(s, ALICE, "email", "Same"),
    )
    assert isinstance(second, AlreadyExists), second


def test_rules_added_at_once_get_positions_of_their_own(committed: Database) -> None:
    run(committed, prefs.add_filter, ALICE, "email", "f")
    _, second = while_held(
        committed,
        lambda s: prefs.add_rule(s, ALICE, "email", "f", "app_is", {"app": "bodhi"}),
        lambda s: prefs.add_rule(s, ALICE, "email", "f", "app_is", {"app": "koji"}),
    )
    assert not isinstance(second, Exception), second
    with committed.begin() as session:
        positions = sorted(session.scalars(select(Rule.position)))
    assert positions == [1, 2]


def test_a_rule_for_a_filter_removed_meanwhile_is_not_found(committed: Database) -> None:
    run(committed, prefs.add_filter, ALICE, "email", "f")
    _, second = while_held(
        committed,
        lambda s: prefs.remove_filter(s, ALICE, "email", "f"),
        lambda s: prefs.add_rule(s, ALICE, "email", "f", "app_is", {"app": "koji"}),
    )
    assert isinstance(second, NotFound), second
    assert count(committed, Rule) == 0


def test_addresses_added_at_once_stay_within_the_pending_cap(committed: Database) -> None:
    for n in range(prefs.MAX_PENDING_PER_CONTEXT - 1):
        run(committed, prefs.set_destination, ALICE, "email", f"alice{n}@example.org")
    _, second = while_held(
        committed,
        lambda s: prefs.set_destination(s, ALICE, "email", "alice.a@example.org"),
        lambda s: prefs.set_destination(s, ALICE, "email", "alice.b@example.org"),
    )
    assert isinstance(second, RateLimited), second
    assert count(committed, Destination) == prefs.MAX_PENDING_PER_CONTEXT


def test_first_contact_from_two_front_ends_gives_the_defaults_once(committed: Database) -> None:
    template = BUILTIN_TEMPLATES[0]
    db = committed
    configure(
        db, defaults=dataclasses.replace(db.config.defaults, templates=(f"{template.name}:email",))
    )
    first, second = while_held(
        db, lambda s: prefs.first_contact(s, ALICE), lambda s: prefs.first_contact(s, ALICE)
    )
    assert len(first) == 1 and second == [], second
    assert count(db, User) == 1
    assert count(db, Filter) == len(template.filters)


def at_once(db: Database, *calls: Callable[[Any], Any]) -> list[Any]:
    """Run each call in a unit of its own thread, all released together; each one's
    result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            with db.person_waiting(busy_timeout=10) as session:
                outcomes[index] = calls[index](session)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    return outcomes


def test_confirm_and_remove_at_once_never_deadlock(committed: Database) -> None:
    # Confirming locks the user row and then updates the destination; removing it
    # deletes the destination and then references the user: without one order for
    # both, PostgreSQL found a deadlock in most of these rounds.
    for n in range(8):
        actor = Actor(f"user{n}")
        pending = run(committed, prefs.set_destination, actor, "email", f"u{n}@example.org")
        destination_id = pending.destination.id
        outcomes = at_once(
            committed,
            partial(prefs.confirm, actor=actor, code=pending.code),
            partial(
                prefs.remove_destination,
                actor=actor,
                context="email",
                destination_id=destination_id,
            ),
        )
        # Removed first, nothing waits for confirmation any more: a sentence.
        assert all(
            not isinstance(o, Exception) or isinstance(o, ConfirmationFailed) for o in outcomes
        ), outcomes


def test_a_code_confirmed_while_it_is_marked_sent_is_not_an_error(committed: Database) -> None:
    pending = add_email(committed)
    code = pending.code
    assert code is not None
    _, marked = while_held(
        committed,
        lambda s: prefs.confirm(s, ALICE, code),
        lambda s: prefs.mark_code_sent(s, pending.destination.id),
    )
    assert marked is False


def test_a_new_code_asked_for_while_the_old_one_goes_out_stays_to_send(db: Database) -> None:
    configure(db, confirmation=ConfirmationConfig(resend_interval_seconds=0))
    pending = add_email(db)
    (going,) = run(db, prefs.pending_confirmation_codes)
    fresh = run(db, prefs.resend_confirmation, ALICE, "email")
    # The sender marks the code it sent: the new one, unsent, keeps its clear text.
    assert run(db, prefs.mark_code_sent, going.destination_id, going.code) is False
    assert [c.code for c in run(db, prefs.pending_confirmation_codes)] == [fresh.code]
    assert run(db, prefs.mark_code_sent, going.destination_id, fresh.code) is True
    assert pending.code != fresh.code
