"""Reading the preferences on connections of their own (PostgreSQL): the daemon's start-up.

These tests need committed rows that other connections can see, so they use a
PostgreSQL database of their own rather than the rolled-back ``db`` fixture.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import database_at  # tests/conftest.py (tests/ is on sys.path)
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmn_core.db import Database
from fmn_core.matcher import Matcher
from fmn_core.models import Filter, Preference, Rule, User, utcnow
from fmn_core.ownership import OwnershipCache
from fmn_core.snapshots import SnapshotStream, UserSnapshot, load_snapshots

from .test_matcher import C, F, facts, insert_user, r, replace_preferences, who

pytestmark = pytest.mark.postgres


@pytest.fixture
def committed(empty_postgres_url: str) -> Iterator[Database]:
    """A fresh PostgreSQL database whose sessions commit for real (the stream opens
    connections of its own); PostgreSQL only, unlike the suite's ``committed``."""
    with database_at(empty_postgres_url) as db:
        yield db


def _populate(db: Database) -> dict[str, int]:
    shared = [r("app_is", app="bodhi"), r("topic_matches", pattern="*.update.*")]
    ids: dict[str, int] = {}
    with db.begin() as session:
        for n in range(60):
            ids[f"u{n}"] = insert_user(
                session,
                f"u{n}",
                C("email", [F("bodhi", shared), F(f"own{n}", [r("app_is", app=f"app{n % 7}")])]),
                C("irc", [F("mine", [r("pertains_to_me")])], enabled=n % 3 != 0),
            )
        ids["alice"] = insert_user(session, "alice", C("email", [F("bodhi", shared)]))
        insert_user(session, "empty", C("email", []))
    return ids


def _checkouts(engine: Engine) -> list[int]:
    seen: list[int] = []
    event.listen(engine, "checkout", lambda *_: seen.append(threading.get_ident()))
    return seen


def test_concurrent_stream_gives_what_the_sequential_one_gives(committed: Database) -> None:
    _populate(committed)
    checkouts = _checkouts(committed.engine)
    with committed.begin() as session, SnapshotStream(session) as stream:
        sequential = list(stream)
    assert len(set(checkouts)) == 1  # the session's own connection alone
    checkouts.clear()
    with committed.begin() as session:
        with SnapshotStream(session, concurrent=True) as stream:
            concurrent = list(stream)
        loaded = load_snapshots(session)
    # Two more connections, checked out by the fetching threads.
    assert len(checkouts) == 3 and len(set(checkouts)) == 3
    assert concurrent == sequential == loaded
    assert len(concurrent) == 62
    # Identical rule lists still share one tuple (compiled once).
    assert concurrent[0].contexts[0].filters[0].rules is concurrent[1].contexts[0].filters[0].rules
    assert committed.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_concurrent_load_gives_the_same_matcher(committed: Database) -> None:
    _populate(committed)
    matchers = []
    for concurrent in (False, True):
        with committed.begin() as session:
            matchers.append(
                Matcher.load(session, load_ownership=OwnershipCache.load, concurrent=concurrent)
            )
    sequential, concurrent_ = matchers
    assert sequential.stats() == concurrent_.stats()
    assert sequential.last_change_id == concurrent_.last_change_id
    for message in (facts(app="bodhi", topic="a.update.b"), facts(app="app3"), facts(app="x")):
        assert who(concurrent_.recipients(message)) == who(sequential.recipients(message))
        assert concurrent_.recipients(message) == concurrent_.naive_recipients(message)
    assert len(who(concurrent_.recipients(facts(app="bodhi", topic="a.update.b")))) == 61


def test_a_change_committed_during_the_load_is_applied_afterwards(committed: Database) -> None:
    ids = _populate(committed)

    def change_alice(session: Session) -> OwnershipCache:
        # Runs once the queries have started: a writer commits meanwhile.
        with committed.begin() as writer:
            replace_preferences(
                writer,
                ids["alice"],
                C("email", [F("koji", [r("app_is", app="koji"), r("topic_matches", pattern="*")])]),
            )
        return OwnershipCache.load(session)

    with committed.begin() as session:
        matcher = Matcher.load(session, load_ownership=change_alice, concurrent=True)
    # The load saw one state, the one before the change, on every connection:
    # alice's old filter whole, not her new filter without its rules.
    bodhi = facts(app="bodhi", topic="a.update.b")
    assert "alice" in {x.user for x in matcher.recipients(bodhi)}
    assert "alice" not in {x.user for x in matcher.recipients(facts(app="koji"))}
    with committed.begin() as session:
        assert matcher.apply_changes(session) == 1
    assert "alice" not in {x.user for x in matcher.recipients(bodhi)}
    assert who(matcher.recipients(facts(app="koji", topic="t"))) == [("alice", "email", "koji")]
    with committed.begin() as session:
        fresh = Matcher.load(session, concurrent=True)
    assert matcher.stats() == fresh.stats()


def test_leaving_the_stream_early_stops_its_threads(committed: Database) -> None:
    _populate(committed)
    before = {t.ident for t in threading.enumerate()}
    with committed.begin() as session:
        with SnapshotStream(session, concurrent=True) as stream:
            first = next(iter(stream))
        assert first.name == "u0"
    assert {t.ident for t in threading.enumerate()} <= before
    assert committed.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_an_error_on_a_side_connection_reaches_the_reader(committed: Database) -> None:
    _populate(committed)

    def refuse(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SET TRANSACTION SNAPSHOT"):
            raise RuntimeError("refused")

    event.listen(committed.engine, "before_cursor_execute", refuse)
    with (
        committed.begin() as session,
        SnapshotStream(session, concurrent=True) as stream,
        pytest.raises(RuntimeError, match="refused"),
    ):
        list(stream)
    assert committed.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_rule_lists_grouped_by_postgresql_read_as_stored(committed: Database) -> None:
    """PostgreSQL groups the rules into distinct lists (one text each): whatever the
    rules hold, the snapshots are the ones read rule by rule."""
    odd = [
        # Separators, quotes, backslashes and non-ASCII text inside names and values.
        r("weird\x1f{}\x1ftrue\x1ename", app='a\x1eb\x1fc"\\d', n=3),
        r("app_is", negated=True, app="é\u2603"),
        r("pertains_to_me"),
        r("app_is", app="bodhi", extra=None),
    ]
    with committed.begin() as session:
        for n in range(3):
            insert_user(
                session,
                f"odd{n}",
                C("email", [F("odd", odd), F("none"), F("reversed", odd[::-1])]),
                C("irc", [F("one", odd[1:2])]),
            )
        user_id = insert_user(session, "positions", C("email", [F("f")]))
        (filter_,) = session.scalars(
            select(Filter).join(Preference).where(Preference.user_id == user_id)
        )
        # Ids in the opposite order of positions: the list follows the positions.
        for position in (2, 0, 1):
            session.add(Rule(filter=filter_, name=f"rule{position}", position=position))
        later = utcnow() + dt.timedelta(days=1)
        insert_user(session, "timed", C("email", [F("t", odd)]))
        session.flush()
        timed_rule = session.scalars(
            select(Rule)
            .join(Filter)
            .join(Preference)
            .join(User)
            .where(User.name == "timed")
            .order_by(Rule.position)
        ).first()
        assert timed_rule is not None
        timed_rule.expires_at = later
    by_id: dict[str, list[UserSnapshot]] = {}
    with committed.begin() as session:
        with SnapshotStream(session) as stream:
            by_id["sequential"] = sorted(stream, key=lambda u: u.user_id)
        with SnapshotStream(session, concurrent=True) as stream:
            by_id["concurrent"] = sorted(stream, key=lambda u: u.user_id)
        loaded = load_snapshots(session)
    assert by_id["sequential"] == by_id["concurrent"] == loaded
    assert len(loaded) == 5
    first, second = by_id["concurrent"][:2]
    assert first.contexts[0].filters[0].rules == tuple(odd)
    assert first.contexts[0].filters[1].rules == ()
    assert first.contexts[0].filters[2].rules == tuple(odd[::-1])
    # Equal lists and equal rules are shared.
    assert first.contexts[0].filters[0].rules is second.contexts[0].filters[0].rules
    assert first.contexts[1].filters[0].rules[0] is second.contexts[0].filters[0].rules[1]
    positions = next(u for u in loaded if u.name == "positions")
    assert [rule.name for rule in positions.contexts[0].filters[0].rules] == [
        "rule0",
        "rule1",
        "rule2",
    ]
    timed = next(u for u in by_id["concurrent"] if u.name == "timed")
    assert timed.contexts[0].filters[0].rules[0].expires_at == later
