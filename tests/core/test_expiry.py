"""Time-bound rules and pauses: the matcher ignores them from their time on, housekeeping
deletes them, and the user is told once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.errors import InvalidArgument
from fmn_core.expiry import expire_preferences
from fmn_core.matcher import Matcher, load_snapshots
from fmn_core.messages import MessageFacts
from fmn_core.models import ChangeEvent, Rule, utcnow
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
