"""Time-bound rules and pauses: the matcher ignores them from their time on, housekeeping
deletes them, and the user is told once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from core.conftest import while_held
from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.errors import InvalidArgument, NotFound
from fmn_core.expiry import expire_preferences
from fmn_core.matcher import Matcher, load_snapshots
from fmn_core.messages import MessageFacts
from fmn_core.models import ChangeEvent, Filter, Rule, User, utcnow
from fmn_core.preferences import Actor

ANA = Actor("ana")


def facts(package: str, app: str = "bodhi") -> MessageFacts:
    return MessageFacts(
        id=f"m-{package}",
        topic=f"org.fedoraproject.prod.{app}.update.comment",
        app_name=app,
        agent_name=None,
        usernames=frozenset(),
        packages=frozenset({package}),
        groups=frozenset(),
        containers=frozenset(),
        modules=frozenset(),
        flatpaks=frozenset(),
        severity=20,
        summary="",
        url=None,
        body={},
        headers={},
        schema="bodhi.update.comment.v1",
    )


def test_a_time_bound_exclusion_ends_by_itself_and_is_announced_once(db: Database) -> None:
    until = utcnow() + dt.timedelta(hours=1)
    with db.begin() as s:
        preferences.add_filter(s, ANA, "email", "updates")
        preferences.add_rule(s, ANA, "email", "updates", "app_is", {"app": "bodhi"})
        view = preferences.add_rule(
            s,
            ANA,
            "email",
            "updates",
            "package_involved",
            {"package": "tzdata"},
            negated=True,
            expires_at=until,
        )
        assert view.rules[1].expires_at == until
        with pytest.raises(InvalidArgument, match="in the future"):
            preferences.add_rule(
                s,
                ANA,
                "email",
                "updates",
                "package_involved",
                {"package": "x"},
                negated=True,
                expires_at=utcnow() - dt.timedelta(seconds=1),
            )
    with db.begin() as s:
        matcher = Matcher.load(s)
        assert matcher.recipients(facts("tzdata")) == []
        assert [r.user for r in matcher.recipients(facts("glibc"))] == ["ana"]
        # From the expiry on, the matcher ignores the exclusion, without any write.
        matcher.clock = lambda: until + dt.timedelta(seconds=1)
        assert matcher.apply_changes(s) == 1
        assert [r.user for r in matcher.recipients(facts("tzdata"))] == ["ana"]
        events = s.scalar(select(func.count()).select_from(ChangeEvent))

    with db.begin() as s:
        assert expire_preferences(s, now=until - dt.timedelta(minutes=1)) == 0
        assert expire_preferences(s, now=until + dt.timedelta(seconds=1)) == 1
        assert s.scalar(select(func.count()).select_from(ChangeEvent)) == (events or 0) + 1
        assert s.scalar(select(func.count()).select_from(Rule)) == 1
    with db.begin() as s:
        view = preferences.get_filter(s, ANA, "email", "updates")
        assert [r.text for r in view.rules] == ["app_is app=bodhi"]
        notices = preferences.take_notices(s, ANA)
        assert notices == [
            "The rule `not package_involved package=tzdata` of your filter 'updates' (email) "
            f"ended on {until:%Y-%m-%d %H:%M} UTC and was removed."
        ]
    with db.begin() as s:
        assert preferences.take_notices(s, ANA) == []  # told once


def test_a_paused_filter_resumes_and_the_user_is_told(db: Database) -> None:
    until = utcnow() + dt.timedelta(days=7)
    with db.begin() as s:
        preferences.add_filter(s, ANA, "email", "updates")
        preferences.add_rule(s, ANA, "email", "updates", "app_is", {"app": "bodhi"})
        view = preferences.pause_filter(s, ANA, "email", "updates", until)
        assert view.paused_until == until
    with db.begin() as s:
        matcher = Matcher.load(s)
        assert matcher.recipients(facts("glibc")) == []
        (snapshot,) = load_snapshots(s)
        (outcome,) = matcher.explain(facts("glibc"), snapshot)
        assert outcome.skipped == "paused" and not outcome.matched
    with db.begin() as s:
        assert expire_preferences(s, now=until + dt.timedelta(seconds=1)) == 1
    with db.begin() as s:
        assert preferences.get_filter(s, ANA, "email", "updates").paused_until is None
        assert [r.user for r in Matcher.load(s).recipients(facts("glibc"))] == ["ana"]
        (notice,) = preferences.take_notices(s, ANA)
        assert notice.startswith("Your filter 'updates' (email) is on again")


# --- housekeeping beside a person editing the same account ------------------------------
#
# The daemon's housekeeping and a front end write one account at once, each on a
# connection of its own: these units commit for real, on a database of their own.


def _expiring_rule(db: Database) -> dt.datetime:
    """Ana's filter "updates": rule 1 for good, rule 2 until the time returned."""
    until = utcnow() + dt.timedelta(hours=1)
    with db.begin() as s:
        preferences.add_filter(s, ANA, "email", "updates")
        preferences.add_rule(s, ANA, "email", "updates", "app_is", {"app": "bodhi"})
        preferences.add_rule(
            s,
            ANA,
            "email",
            "updates",
            "package_involved",
            {"package": "tzdata"},
            negated=True,
            expires_at=until,
        )
    return until


def _rules(db: Database) -> list[tuple[str, int]]:
    with db.begin() as s:
        return [(r.name, r.position) for r in s.scalars(select(Rule).order_by(Rule.position))]


def test_expiry_beside_a_change_to_the_expiring_rule_gives_a_sentence(
    committed: Database,
) -> None:
    # Housekeeping removed the rule while the person changed it: the person's unit
    # failed with SQLAlchemy's StaleDataError (an internal error), not in words.
    until = _expiring_rule(committed)
    _, second = while_held(
        committed,
        lambda s: expire_preferences(s, now=until + dt.timedelta(seconds=1)),
        lambda s: preferences.set_rule_negated(s, ANA, "email", "updates", 2, False),
        first_is_a_person=False,
    )
    assert isinstance(second, NotFound), repr(second)
    assert _rules(committed) == [("app_is", 1)]


def test_expiry_beside_removing_the_filter_removes_it_cleanly(committed: Database) -> None:
    until = _expiring_rule(committed)
    _, second = while_held(
        committed,
        lambda s: expire_preferences(s, now=until + dt.timedelta(seconds=1)),
        lambda s: preferences.remove_filter(s, ANA, "email", "updates"),
        first_is_a_person=False,
    )
    assert not isinstance(second, Exception), repr(second)
    assert _rules(committed) == []
    with committed.begin() as s:
        assert s.scalar(select(func.count()).select_from(Filter)) == 0


def test_expiry_after_a_change_under_way_waits_and_checks_again(committed: Database) -> None:
    # The person removes the expiring rule first; housekeeping, waiting for them,
    # finds nothing left to end and tells nobody about a rule they removed themselves.
    until = _expiring_rule(committed)
    _, ended = while_held(
        committed,
        lambda s: preferences.remove_rule(s, ANA, "email", "updates", 2),
        lambda s: expire_preferences(s, now=until + dt.timedelta(seconds=1)),
        first_is_a_person=False,
    )
    assert ended == 0, repr(ended)
    assert _rules(committed) == [("app_is", 1)]
    with committed.begin() as s:
        assert preferences.take_notices(s, ANA) == []


def test_notices_read_beside_expiry_are_not_lost(committed: Database) -> None:
    # The person reads (and so clears) the notices while housekeeping adds one: the
    # clearing overwrote the new notice, which the person never saw.
    until = _expiring_rule(committed)
    with committed.begin() as s:
        user = s.scalars(select(User).where(User.name == "ana")).one()
        user.notices = ["an older notice"]
    _, read = while_held(
        committed,
        lambda s: expire_preferences(s, now=until + dt.timedelta(seconds=1)),
        lambda s: preferences.take_notices(s, ANA),
        first_is_a_person=False,
    )
    assert not isinstance(read, Exception), repr(read)
    with committed.begin() as s:
        left = preferences.take_notices(s, ANA)
    assert len(read) + len(left) == 2, (read, left)
    assert "an older notice" in read


def test_a_new_pause_beside_the_old_one_ending_stays(committed: Database) -> None:
    until = _expiring_rule(committed)
    later = utcnow() + dt.timedelta(days=2)
    with committed.begin() as s:
        preferences.pause_filter(s, ANA, "email", "updates", until)
    _, second = while_held(
        committed,
        lambda s: expire_preferences(s, now=until + dt.timedelta(seconds=1)),
        lambda s: preferences.pause_filter(s, ANA, "email", "updates", later),
        first_is_a_person=False,
    )
    assert not isinstance(second, Exception), repr(second)
    with committed.begin() as s:
        assert preferences.get_filter(s, ANA, "email", "updates").paused_until == later


def test_expiry_takes_a_batch_of_accounts_a_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each account's lock is held to the commit: a backlog goes a batch per run.
    monkeypatch.setattr("fmn_core.expiry.MAX_ACCOUNTS_PER_RUN", 2)
    until = utcnow() + dt.timedelta(hours=1)
    with db.begin() as s:
        for name in ("cid", "ana", "bea"):
            actor = Actor(name)
            preferences.add_filter(s, actor, "email", "updates")
            preferences.add_rule(
                s, actor, "email", "updates", "app_is", {"app": "bodhi"}, expires_at=until
            )
        preferences.pause_filter(s, Actor("cid"), "email", "updates", until)
    later = until + dt.timedelta(seconds=1)
    with db.begin() as s:
        assert expire_preferences(s, now=later) == 2
        left = s.scalars(select(User.name).join(User.preferences).join(Filter).join(Rule))
        assert list(left) == ["cid"]
    with db.begin() as s:
        assert expire_preferences(s, now=later) == 2  # cid's rule and pause
        assert expire_preferences(s, now=later) == 0


def test_adding_again_a_rule_that_ended_before_housekeeping_keeps_the_new_one(
    db: Database,
) -> None:
    _expiring_rule(db)
    with db.begin() as s:
        # The mute ended a minute ago; housekeeping has not run since.
        rule = s.scalars(select(Rule).where(Rule.expires_at.is_not(None))).one()
        rule.expires_at = utcnow() - dt.timedelta(minutes=1)
    again = utcnow() + dt.timedelta(days=30)
    with db.begin() as s:
        # "Mute for 30 days" once more: taken, not "already in filter".
        view = preferences.add_rule(
            s,
            ANA,
            "email",
            "updates",
            "package_involved",
            {"package": "tzdata"},
            negated=True,
            expires_at=again,
        )
        assert [r.expires_at for r in view.rules] == [None, again]
    with db.begin() as s:
        assert expire_preferences(s) == 0
    with db.begin() as s:
        matcher = Matcher.load(s)
        assert matcher.recipients(facts("tzdata")) == []
        assert s.scalars(select(func.count()).select_from(Rule)).one() == 2
