"""The indexed matcher: semantics on both databases, and the index against the naive oracle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from fmn_core import snapshots as snapshots_module
from fmn_core.accounts import LocalDirectory
from fmn_core.config import CONTEXTS
from fmn_core.db import Database, run_all_on_driver
from fmn_core.matcher import (
    ContextSnapshot,
    FilterSnapshot,
    Matcher,
    MatcherStats,
    Recipient,
    RuleSnapshot,
    UserSnapshot,
    _entries_of,
    _rule_context,
    _SharedFilter,
    load_snapshots,
)
from fmn_core.messages import SEVERITY_LEVELS, MessageFacts
from fmn_core.models import ChangeEvent, Filter, Preference, Rule, User
from fmn_core.ownership import OwnershipCache
from fmn_core.rules import Catalog, IndexHint, Parameter, RuleContext, RuleSpec, default_catalog
from fmn_core.snapshots import (
    _json,
    _rule_snapshot,
    _RuleLists,
    _streamed,
    _user_snapshot,
    stream_snapshots,
)

# -- building preferences --------------------------------------------------------------


def r(name: str, /, *, negated: bool = False, **arguments: Any) -> RuleSnapshot:
    """A rule as stored."""
    return RuleSnapshot(name, arguments, negated)


@dataclass
class F:
    """A filter to store: its rules in order."""

    name: str
    rules: Sequence[RuleSnapshot] = ()
    active: bool = True


@dataclass
class C:
    """A context preference to store: its filters in position order."""

    context: str
    filters: Sequence[F] = field(default_factory=list)
    enabled: bool = True


def insert_user(session: Session, name: str, *contexts: C) -> int:
    """Write a user's preferences as model rows (as the preference service would)."""
    user = User(name=name)
    session.add(user)
    for c in contexts:
        preference = Preference(user=user, context=c.context, enabled=c.enabled)
        session.add(preference)
        for position, f in enumerate(c.filters):
            filter_ = Filter(preference=preference, name=f.name, active=f.active, position=position)
            session.add(filter_)
            for number, rule in enumerate(f.rules):
                session.add(
                    Rule(
                        filter=filter_,
                        name=rule.name,
                        arguments=dict(rule.arguments),
                        negated=rule.negated,
                        position=number,
                    )
                )
    session.flush()
    return user.id


def replace_preferences(session: Session, user_id: int, *contexts: C, record: bool = True) -> None:
    """Rewrite a user's preferences, recording a change event like the write path does."""
    user = session.get(User, user_id)
    assert user is not None
    for preference in list(user.preferences):
        session.delete(preference)
    session.flush()
    session.expire(user, ["preferences"])
    for c in contexts:
        preference = Preference(user_id=user_id, context=c.context, enabled=c.enabled)
        session.add(preference)
        for position, f in enumerate(c.filters):
            filter_ = Filter(preference=preference, name=f.name, active=f.active, position=position)
            session.add(filter_)
            for number, rule in enumerate(f.rules):
                session.add(
                    Rule(
                        filter=filter_,
                        name=rule.name,
                        arguments=dict(rule.arguments),
                        negated=rule.negated,
                        position=number,
                    )
                )
    if record:
        session.add(ChangeEvent(user_id=user_id, kind="test"))
    session.flush()
    session.expire_all()


_filter_ids = itertools.count(1)


def snapshot(user_id: int, name: str, *contexts: C) -> UserSnapshot:
    """The same preferences as an in-memory snapshot."""
    return UserSnapshot(
        user_id,
        name,
        tuple(
            ContextSnapshot(
                c.context,
                tuple(
                    FilterSnapshot(next(_filter_ids), f.name, tuple(f.rules), f.active)
                    for f in c.filters
                ),
                c.enabled,
            )
            for c in contexts
        ),
    )


def facts(
    message_id: str = "msg-1",
    *,
    topic: str = "org.fedoraproject.prod.bodhi.update.comment",
    app: str = "bodhi",
    agent: str | None = None,
    usernames: Iterable[str] = (),
    packages: Iterable[str] = (),
    groups: Iterable[str] = (),
    severity: str = "INFO",
    summary: str = "",
) -> MessageFacts:
    """A message's facts, written by hand."""
    return MessageFacts(
        id=message_id,
        topic=topic,
        app_name=app,
        agent_name=agent,
        usernames=frozenset(usernames),
        packages=frozenset(packages),
        groups=frozenset(groups),
        containers=frozenset(),
        modules=frozenset(),
        flatpaks=frozenset(),
        severity=SEVERITY_LEVELS[severity],
        summary=summary,
        url=None,
        body={},
        headers={},
        schema="base.message",
    )


def who(recipients: Iterable[Recipient]) -> list[tuple[str, str, str]]:
    """(user, context, filter name) of each recipient, in the matcher's order."""
    return [(x.user, x.context, x.filter_name) for x in recipients]


class Ownership:
    """An ownership lookup over a plain map (owner -> packages)."""

    def __init__(self, packages: Mapping[str, Iterable[str]] | None = None) -> None:
        self.packages = {owner: frozenset(p) for owner, p in (packages or {}).items()}

    def packages_of(self, owner: str) -> frozenset[str]:
        return self.packages.get(owner, frozenset())

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset(o for o, p in self.packages.items() if package in p)


def _boom(message: MessageFacts, context: RuleContext) -> bool:
    raise RuntimeError("this rule is broken")


def _flaky_app(message: MessageFacts, context: RuleContext, app: str) -> bool:
    # Raises on messages naming nobody: rules are third-party code over untrusted bodies.
    if not message.usernames:
        raise KeyError("usernames")
    return message.app_name.lower() == app.lower()


def _counting(calls: list[str]) -> RuleSpec:
    def counted(message: MessageFacts, context: RuleContext) -> bool:
        calls.append(context.owner)
        return True

    return RuleSpec("counted", "tests:counted", counted, "Counted", "Counts its calls.")


BOOM = RuleSpec("boom", "tests:boom", _boom, "Boom", "Always raises.")
FLAKY_APP = RuleSpec(
    "flaky_app",
    "tests:flaky_app",
    _flaky_app,
    "Flaky app",
    "app_is that raises sometimes.",
    (Parameter("app", "an app"),),
    IndexHint("app", lambda arguments, context: (str(arguments["app"]).lower(),), 40),
)


def catalog_with(*extra: RuleSpec) -> Catalog:
    """The installed catalog plus some test rules."""
    catalog = Catalog(list(default_catalog()))
    for spec in extra:
        catalog.add(spec)
    return catalog


def load(db: Database, **kwargs: Any) -> Matcher:
    with db.begin() as session:
        return Matcher.load(session, **kwargs)


# -- semantics, through the database -------------------------------------------------------


def test_matcher_loads_preferences_and_matches(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        insert_user(session, "bob", C("email", [F("koji", [r("app_is", app="koji")])]))
    matcher = load(db)
    assert matcher.stats().users == 2
    found = matcher.recipients(facts(app="Bodhi"))
    assert len(found) == 1
    assert found[0].user_id == alice
    assert who(found) == [("alice", "email", "bodhi")]
    assert found == matcher.naive_recipients(facts(app="Bodhi"))


def test_the_collector_is_paused_from_the_ownership_on_while_loading(db: Database) -> None:
    # The ownership is built with the collector paused, as the users are: its full
    # collections would otherwise scan everything the process holds, several times.
    with db.begin() as session:
        insert_user(session, "alice", C("email", [F("mine", [r("package_owned_by_me")])]))
    assert gc.isenabled()
    seen: list[bool] = []

    def load_ownership(session: Session) -> OwnershipCache:
        seen.append(gc.isenabled())
        return OwnershipCache([("rpms", "kernel", "alice")])

    matcher = load(db, load_ownership=load_ownership)
    assert seen == [False]
    assert gc.isenabled()
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("alice", "email", "mine")]
    assert matcher.recipients(facts(packages=["glibc"])) == []

    def broken(session: Session) -> OwnershipCache:
        raise RuntimeError("no ownership")

    with pytest.raises(RuntimeError, match="no ownership"):
        load(db, load_ownership=broken)
    assert gc.isenabled()  # back on after a failed load too


def test_streamed_snapshots_equal_the_loaded_ones(db: Database) -> None:
    """What ``Matcher.load`` compiles (one user at a time) is what ``load_snapshots`` reads,
    time-bound users, rule-less filters, disabled contexts and shared rule lists included."""
    now = dt.datetime.now(dt.UTC)
    shared = [r("app_is", app="bodhi"), r("topic_matches", pattern="*.comment", negated=True)]
    with db.begin() as session:
        insert_user(
            session, "alice", C("email", [F("a", shared), F("b", [r("app_is", app="koji")])])
        )
        insert_user(session, "bob", C("email", [F("a", shared)]), C("irc", [F("e", [])]))
        carol = insert_user(
            session,
            "carol",
            C("irc", [F("off", shared, active=False)], enabled=False),
            C("email", [F("x", [r("pertains_to_me")]), F("y", shared)]),
        )
        dave = insert_user(session, "dave", C("email", [F("p", shared), F("q", shared)]))
        insert_user(session, "erin", C("email", []))
        session.add(User(name="frank"))  # no preferences: no snapshot
        pause = session.scalars(select(Filter).where(Filter.name == "x")).one()
        pause.paused_until = now + dt.timedelta(hours=1)
        expiring = session.scalars(
            select(Rule).join(Filter).where(Filter.name == "q", Rule.position == 1)
        ).one()
        expiring.expires_at = now + dt.timedelta(hours=2)
    with db.begin() as session:
        streamed = sorted(stream_snapshots(session), key=lambda u: u.user_id)
        loaded = load_snapshots(session)
    assert streamed == loaded
    assert [u.name for u in streamed] == ["alice", "bob", "carol", "dave", "erin"]
    by_id = {u.user_id: u for u in streamed}
    assert by_id[carol].contexts[0].filters[0].paused_until is not None
    assert by_id[dave].contexts[0].filters[1].rules[1].expires_at is not None
    # Identical rule lists share one tuple (compiled once).
    firsts = [u.contexts[0].filters[0].rules for u in streamed[:2]]
    assert firsts[0] is firsts[1]


def test_a_few_users_snapshots_equal_those_of_the_whole_load(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh between batches (a few users' ids; driver queries on PostgreSQL) reads
    what the whole load reads, times as UTC datetimes included."""
    now = dt.datetime.now(dt.UTC)
    shared = [r("app_is", app="bodhi"), r("topic_matches", pattern="*.comment", negated=True)]
    with db.begin() as session:
        insert_user(session, "alice", C("email", [F("a", shared)]))
        bob = insert_user(
            session,
            "bob",
            C("irc", [F("off", shared, active=False)], enabled=False),
            C("email", [F("x", [r("pertains_to_me")]), F("y", shared), F("z", [])]),
        )
        carol = insert_user(session, "carol", C("email", [F("p", shared), F("q", shared)]))
        pause = session.scalars(select(Filter).where(Filter.name == "x")).one()
        pause.paused_until = now + dt.timedelta(hours=1)
        expiring = session.scalars(
            select(Rule).join(Filter).where(Filter.name == "q", Rule.position == 1)
        ).one()
        expiring.expires_at = now + dt.timedelta(hours=2)
    # On PostgreSQL the refresh's three queries go to the server together (one
    # round trip: the ingest writer waits for it between batches).
    sent: list[int] = []
    together = run_all_on_driver

    def counting(session: Session, statements: Sequence[tuple[str, Sequence[Any]]]) -> Any:
        sent.append(len(statements))
        return together(session, statements)

    monkeypatch.setattr(snapshots_module, "run_all_on_driver", counting)
    with db.begin() as session:
        everyone = {u.user_id: u for u in load_snapshots(session)}
        few = load_snapshots(session, [carol, bob, 10_000])
    assert sent == ([3] if db.engine.dialect.name == "postgresql" else [])
    assert few == [everyone[bob], everyone[carol]]
    assert few[0].contexts[0].filters[0].paused_until == now + dt.timedelta(hours=1)
    assert few[1].contexts[0].filters[1].rules[1].expires_at == now + dt.timedelta(hours=2)
    assert few[1].contexts[0].filters[1].rules[1].expires_at.tzinfo == dt.UTC
    assert few[0].contexts[0].filters[1].rules[1].negated
    assert not few[0].contexts[1].enabled and not few[0].contexts[1].filters[0].active


def test_matcher_load_then_an_edit_is_refreshed(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        insert_user(session, "bob", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        insert_user(session, "carol", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
    matcher = load(db)
    assert (matcher.stats().groups, matcher.stats().grouped) == (1, 3)
    with db.begin() as session:
        replace_preferences(session, alice, C("email", [F("koji", [r("app_is", app="koji")])]))
    with db.begin() as session:
        assert matcher.apply_changes(session) == 1
    assert [x.user for x in matcher.recipients(facts(app="bodhi"))] == ["bob", "carol"]
    assert who(matcher.recipients(facts(app="koji"))) == [("alice", "email", "koji")]
    for message in (facts(app="bodhi"), facts(app="koji")):
        assert matcher.recipients(message) == matcher.naive_recipients(message)
    assert matcher.stats() == load(db).stats()


def test_matcher_ignores_inactive_filter(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session, "alice", C("email", [F("off", [r("app_is", app="bodhi")], active=False)])
        )
        insert_user(session, "bob", C("email", [F("on", [r("app_is", app="bodhi")])]))
    matcher = load(db)
    assert who(matcher.recipients(facts())) == [("bob", "email", "on")]
    assert matcher.stats().filters == 1


def test_matcher_ignores_disabled_context(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C("email", [F("bodhi", [r("app_is", app="bodhi")])], enabled=False),
            C("irc", [F("bodhi", [r("app_is", app="bodhi")])]),
        )
    assert who(load(db).recipients(facts())) == [("alice", "irc", "bodhi")]


def test_matcher_ignores_context_not_offered(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C("email", [F("bodhi", [r("app_is", app="bodhi")])]),
            C("push", [F("bodhi", [r("app_is", app="bodhi")])]),
        )
    assert who(load(db, contexts=["email"]).recipients(facts())) == [("alice", "email", "bodhi")]
    # By default the contexts come from the session's configuration (all of them here).
    assert [x.context for x in load(db).recipients(facts())] == ["email", "push"]


def test_matcher_filter_without_rules_matches_nothing(db: Database) -> None:
    with db.begin() as session:
        insert_user(session, "alice", C("email", [F("empty")]))
    matcher = load(db)
    assert matcher.recipients(facts()) == []
    assert matcher.naive_recipients(facts()) == []
    assert matcher.stats().filters == 0


def test_matcher_rules_in_a_filter_are_anded(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C(
                "email",
                [
                    F(
                        "kernel updates",
                        [r("app_is", app="bodhi"), r("package_involved", package="kernel")],
                    )
                ],
            ),
        )
    matcher = load(db)
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [
        ("alice", "email", "kernel updates")
    ]
    assert matcher.recipients(facts(packages=["glibc"])) == []
    assert matcher.recipients(facts(app="koji", packages=["kernel"])) == []


def test_matcher_filters_are_ored_and_the_first_by_position_is_named(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C(
                "email",
                [
                    F("mine", [r("pertains_to_me")]),
                    F("bodhi", [r("app_is", app="bodhi")]),
                    F("kernel", [r("package_involved", package="kernel")]),
                ],
            ),
        )
    matcher = load(db)
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("alice", "email", "bodhi")]
    assert who(matcher.recipients(facts(app="koji", packages=["kernel"]))) == [
        ("alice", "email", "kernel")
    ]
    assert who(matcher.recipients(facts(usernames=["alice"], packages=["kernel"]))) == [
        ("alice", "email", "mine")
    ]
    assert matcher.recipients(facts(app="koji")) == []


def test_matcher_honours_negation(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C(
                "email",
                [
                    F(
                        "about me, not by me",
                        [r("pertains_to_me"), r("triggered_by_me", negated=True)],
                    )
                ],
            ),
        )
        insert_user(
            session, "bob", C("email", [F("not koji", [r("app_is", app="koji", negated=True)])])
        )
    matcher = load(db)
    mine = facts(usernames=["alice", "carol"], agent="carol")
    assert who(matcher.recipients(mine)) == [
        ("alice", "email", "about me, not by me"),
        ("bob", "email", "not koji"),
    ]
    by_me = facts(usernames=["alice"], agent="alice", app="koji")
    assert matcher.recipients(by_me) == []


def test_matcher_one_recipient_per_user_and_context_sorted(db: Database) -> None:
    with db.begin() as session:
        zed = insert_user(
            session,
            "zed",
            C("irc", [F("a", [r("app_is", app="bodhi")])]),
            C("email", [F("b", [r("app_is", app="bodhi")]), F("c", [r("pertains_to_me")])]),
        )
        amy = insert_user(
            session,
            "amy",
            C("email", [F("d", [r("app_is", app="bodhi")]), F("e", [r("app_is", app="bodhi")])]),
        )
    found = load(db).recipients(facts(usernames=["zed"]))
    assert [(x.user_id, x.context, x.filter_name) for x in found] == [
        (zed, "email", "b"),
        (zed, "irc", "a"),
        (amy, "email", "d"),
    ]
    assert found == sorted(found)  # by user, then context: the dataclass order


def test_matcher_rule_that_raises_counts_as_not_matching_and_is_logged_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = catalog_with(BOOM)
    with db.begin() as session:
        for name in ("alice", "bob"):
            insert_user(
                session,
                name,
                C(
                    "email",
                    [
                        F("broken", [r("app_is", app="bodhi"), r("boom")]),
                        F("fine", [r("app_is", app="bodhi")]),
                    ],
                ),
            )
        insert_user(session, "carol", C("email", [F("broken", [r("boom")])]))
    matcher = load(db, catalog=catalog)
    caplog.set_level(logging.WARNING, logger="fmn_core.matcher")
    message = facts("msg-42")
    expected = [("alice", "email", "fine"), ("bob", "email", "fine")]
    assert who(matcher.recipients(message)) == expected
    assert who(matcher.naive_recipients(message)) == expected
    assert who(matcher.recipients(message)) == expected
    failures = [rec for rec in caplog.records if "raised" in rec.getMessage()]
    assert len(failures) == 1
    assert "boom" in failures[0].getMessage() and "msg-42" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    matcher.recipients(facts("msg-43"))
    assert len([rec for rec in caplog.records if "raised" in rec.getMessage()]) == 2


def test_matcher_unknown_rule_never_matches_and_is_logged_at_load(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C(
                "email",
                [
                    F("plugin", [r("app_is", app="bodhi"), r("gone_plugin:rule")]),
                    F("negated plugin", [r("gone_plugin:rule", negated=True)]),
                    F("later", [r("package_involved", package="kernel")]),
                ],
            ),
        )
    caplog.set_level(logging.WARNING, logger="fmn_core.matcher")
    matcher = load(db)
    warnings = [rec.getMessage() for rec in caplog.records]
    assert any(
        "gone_plugin:rule" in w and "not installed" in w and "2 filter" in w for w in warnings
    ), warnings
    assert matcher.recipients(facts()) == []
    assert matcher.naive_recipients(facts()) == []
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("alice", "email", "later")]


def test_matcher_invalid_stored_arguments_never_match_and_are_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with db.begin() as session:
        insert_user(
            session,
            "alice",
            C(
                "email",
                [
                    F("bad", [r("app_is", application="bodhi")]),
                    F("good", [r("app_is", app="bodhi")]),
                ],
            ),
        )
    caplog.set_level(logging.WARNING, logger="fmn_core.matcher")
    matcher = load(db)
    assert any("no longer valid" in rec.getMessage() for rec in caplog.records)
    assert who(matcher.recipients(facts())) == [("alice", "email", "good")]


def test_matcher_accepts_rules_stored_by_reference(db: Database) -> None:
    with db.begin() as session:
        insert_user(
            session, "alice", C("email", [F("ref", [r("fmn_core.catalog:app_is", app="bodhi")])])
        )
    assert who(load(db).recipients(facts())) == [("alice", "email", "ref")]


def test_matcher_evaluates_only_the_filters_the_index_names() -> None:
    calls: list[str] = []
    catalog = catalog_with(_counting(calls))
    users = [
        # Filed under username "alice" (rank 10), not under app "bodhi" (rank 40).
        snapshot(
            1,
            "u1",
            C(
                "email",
                [
                    F(
                        "f",
                        [
                            r("counted"),
                            r("app_is", app="bodhi"),
                            r("user_involved", username="alice"),
                        ],
                    )
                ],
            ),
        ),
        # A negated rule is never the index key: this one is checked on every message.
        snapshot(
            2,
            "u2",
            C("email", [F("f", [r("counted"), r("user_involved", username="bob", negated=True)])]),
        ),
        # Filed under package "kernel".
        snapshot(
            3, "u3", C("email", [F("f", [r("counted"), r("package_involved", package="kernel")])])
        ),
    ]
    matcher = Matcher.from_snapshots(users, catalog=catalog)
    stats = matcher.stats()
    assert (stats.filters, stats.indexed, stats.always) == (3, 2, 1)

    assert who(matcher.recipients(facts())) == [("u2", "email", "f")]
    assert calls == ["u2"]
    calls.clear()
    assert who(matcher.recipients(facts(usernames=["alice"], packages=["kernel"]))) == [
        ("u1", "email", "f"),
        ("u2", "email", "f"),
        ("u3", "email", "f"),
    ]
    assert sorted(calls) == ["u1", "u2", "u3"]
    calls.clear()
    matcher.naive_recipients(facts())
    assert sorted(calls) == ["u1", "u2", "u3"]


def test_matcher_index_values_with_one_then_many_then_one_filter() -> None:
    # An index value holding its only filter, then a second, then the first gone
    # again: each answer names who is filed there now and evaluates only them.
    def kernel_watcher(user_id: int, name: str, *extra: RuleSnapshot) -> UserSnapshot:
        return snapshot(
            user_id, name, C("email", [F("f", [r("package_involved", package="kernel"), *extra])])
        )

    kernel = facts(packages=["kernel"])
    # Personal rules (whose filter it is) are never grouped: each is filed as itself.
    mine = r("triggered_by_me", negated=True)
    matcher = Matcher.from_snapshots([kernel_watcher(1, "u1", mine)])
    assert who(matcher.recipients(kernel)) == [("u1", "email", "f")]
    assert matcher.count_candidates(kernel) == 1
    matcher.replace_users((), [kernel_watcher(2, "u2", mine), kernel_watcher(3, "u3", mine)])
    assert [w[0] for w in who(matcher.recipients(kernel))] == ["u1", "u2", "u3"]
    assert matcher.count_candidates(kernel) == 3
    matcher.replace_users((1, 2), [])
    assert who(matcher.recipients(kernel)) == [("u3", "email", "f")]
    assert matcher.count_candidates(kernel) == 1
    matcher.replace_users((3,), [])
    assert matcher.recipients(kernel) == []
    assert matcher.count_candidates(kernel) == 0
    assert matcher.stats().buckets == 0
    # Impersonal filters with the same rules become a group filed where the first was.
    matcher.replace_users((), [kernel_watcher(4, "u4")])
    matcher.replace_users((), [kernel_watcher(5, "u5")])
    assert [w[0] for w in who(matcher.recipients(kernel))] == ["u4", "u5"]
    assert matcher.count_candidates(kernel) == 1
    matcher.replace_users((4,), [])
    assert who(matcher.recipients(kernel)) == [("u5", "email", "f")]
    assert matcher.stats() == Matcher.from_snapshots([kernel_watcher(5, "u5")]).stats()


def test_matcher_hint_on_an_unknown_key_is_checked_on_every_message() -> None:
    def container_is(message: MessageFacts, context: RuleContext, name: str) -> bool:
        return name in message.containers

    spec = RuleSpec(
        "container_is",
        "tests:container_is",
        container_is,
        "Container",
        "",
        (Parameter("name", "a container"),),
        IndexHint("container", lambda a, c: (a["name"],), 1),
    )
    users = [snapshot(1, "alice", C("email", [F("c", [r("container_is", name="httpd")])]))]
    matcher = Matcher.from_snapshots(users, catalog=catalog_with(spec))
    assert matcher.stats().always == 1
    message = replace(facts(), containers=frozenset({"httpd"}))
    assert who(matcher.recipients(message)) == [("alice", "email", "c")]


def _watchers(rules: tuple[RuleSnapshot, ...], names: Sequence[str]) -> list[UserSnapshot]:
    """Users with one filter each, all holding the very same rule tuple (as streamed)."""
    return [
        UserSnapshot(
            number,
            name,
            (ContextSnapshot("email", (FilterSnapshot(number * 10, "f", rules),)),),
        )
        for number, name in enumerate(names, start=1)
    ]


def test_matcher_files_a_rule_list_once_unless_its_hint_reads_whose_filter_it_is() -> None:
    asked: list[str] = []

    def anyone(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
        asked.append("anyone")
        return (str(arguments["name"]),)

    def me(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
        asked.append(context.owner)
        return (context.owner,)

    def involves(message: MessageFacts, context: RuleContext, name: str) -> bool:
        return name in message.usernames

    def involves_me(message: MessageFacts, context: RuleContext) -> bool:
        return context.owner in message.usernames

    catalog = catalog_with(
        RuleSpec(
            "involves",
            "tests:involves",
            involves,
            "Involves",
            "",
            (Parameter("name", "a user"),),
            IndexHint("username", anyone, 10),
        ),
        RuleSpec(
            "involves_me",
            "tests:involves_me",
            involves_me,
            "Me",
            "",
            (),
            IndexHint("username", me, 10),
        ),
    )
    names = ["u1", "u2", "u3"]
    shared = Matcher.from_snapshots(
        _watchers((r("involves", name="carol"),), names), catalog=catalog
    )
    # One hint call for the three filters; they are one group filed under "carol".
    assert asked == ["anyone"]
    assert (shared.stats().groups, shared.stats().grouped) == (1, 3)
    assert [x.user for x in shared.recipients(facts(usernames=["carol"]))] == names
    assert shared.recipients(facts(usernames=["u1"])) == []

    asked.clear()
    personal = Matcher.from_snapshots(_watchers((r("involves_me"),), names), catalog=catalog)
    # A hint that reads whose filter it is is asked for each, and files each apart.
    assert asked == names
    assert personal.stats().buckets == 3
    for name in names:
        message = facts(usernames=[name])
        assert [x.user for x in personal.recipients(message)] == [name]
        assert personal.recipients(message) == personal.naive_recipients(message)


class _CountingOwnership(Ownership):
    def __init__(self, packages: Mapping[str, Iterable[str]] | None = None) -> None:
        super().__init__(packages)
        self.asked = 0

    def packages_of(self, owner: str) -> frozenset[str]:
        self.asked += 1
        return super().packages_of(owner)


def test_matcher_does_not_ask_hints_that_cannot_win() -> None:
    """A filter about "me" (rank 10) and "my packages" (rank 15) is filed under its
    owner's name whatever they own: the ownership lookup is not read, and a new
    ownership lookup leaves it where it is."""
    rules = (r("package_owned_by_me"), r("pertains_to_me"))
    ownership = _CountingOwnership({"alice": ["kernel"]})
    matcher = Matcher.from_snapshots(_watchers(rules, ["alice", "bob"]), ownership=ownership)
    assert ownership.asked == 0
    message = facts(usernames=["alice"], packages=["kernel"])
    assert who(matcher.recipients(message)) == [("alice", "email", "f")]
    assert matcher.recipients(facts(packages=["kernel"])) == []
    matcher.set_ownership(_CountingOwnership({"bob": ["kernel"]}))
    assert who(matcher.recipients(facts(usernames=["bob"], packages=["kernel"]))) == [
        ("bob", "email", "f")
    ]
    for message in (facts(usernames=["alice", "bob"], packages=["kernel"]), facts()):
        assert matcher.recipients(message) == matcher.naive_recipients(message)


def test_matcher_asks_a_user_s_lead_hint_once_for_all_their_filters() -> None:
    """A packager's "my packages" filters, each with other rules, read the ownership
    lookup once per user, are filed once under their owner (not under each of the
    owner's packages), and follow ``set_ownership``."""
    mine = [
        F("a", [r("package_owned_by_me"), r("app_is", app="bodhi")]),
        F("b", [r("topic_matches", pattern="*.koji.*"), r("package_owned_by_me")]),
        F("c", [r("package_owned_by_me")]),
    ]
    users = [snapshot(1, "alice", C("email", mine)), snapshot(2, "bob", C("email", mine))]
    ownership = _CountingOwnership({"alice": ["kernel", "glibc"], "bob": ["bash"]})
    matcher = Matcher.from_snapshots(users, ownership=ownership)
    assert ownership.asked == 2  # once per user, not once per filter
    assert matcher.stats().buckets == 2  # "alice" and "bob", not their three packages
    kernel = facts(app="bodhi", packages=["kernel"])
    assert who(matcher.recipients(kernel)) == [("alice", "email", "a")]
    assert who(matcher.recipients(facts(app="koji", topic="x.koji.y", packages=["bash"]))) == [
        ("bob", "email", "b")
    ]
    matcher.set_ownership(Ownership({"bob": ["kernel"]}))
    assert who(matcher.recipients(kernel)) == [("bob", "email", "a")]
    messages = [kernel, facts(app="koji", topic="x.koji.y", packages=["glibc", "kernel"])]
    for message in messages:
        assert matcher.recipients(message) == matcher.naive_recipients(message)


def test_matcher_files_by_the_next_hint_when_the_lead_names_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lead hint (alone at the best rank) that names nothing for one owner, or raises:
    that owner's filters are filed by their other hints, as when every hint is asked,
    and each failure is logged."""

    def maybe_me(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...] | None:
        if context.owner == "carol":
            raise RuntimeError("broken hint")
        return None if context.owner == "bob" else (context.owner,)

    def me(message: MessageFacts, context: RuleContext) -> bool:
        return context.owner in message.usernames

    spec = RuleSpec(
        "maybe_me", "tests:maybe_me", me, "Me", "", (), IndexHint("username", maybe_me, 5)
    )
    filters = [
        F("app", [r("maybe_me"), r("app_is", app="bodhi")]),
        F("pkg", [r("package_involved", package="kernel"), r("maybe_me")]),
    ]
    users = [
        snapshot(n, name, C("email", filters)) for n, name in enumerate(["alice", "bob", "carol"])
    ]
    with caplog.at_level("WARNING", logger="fmn_core.matcher"):
        matcher = Matcher.from_snapshots(users, catalog=catalog_with(spec))
    assert sum("index hint failed" in m for m in caplog.messages) == 2  # carol's two filters
    assert matcher.count_candidates(facts(app="x", usernames=["alice"])) == 2
    assert matcher.count_candidates(facts(app="x", usernames=["bob", "carol"])) == 0
    assert matcher.count_candidates(facts(app="bodhi")) == 2  # bob's and carol's
    assert matcher.count_candidates(facts(app="x", packages=["kernel"])) == 2
    everyone = facts(usernames=["alice", "bob", "carol"], packages=["kernel"])
    assert who(matcher.recipients(everyone)) == [
        ("alice", "email", "app"),
        ("bob", "email", "app"),
        ("carol", "email", "app"),
    ]
    for message in (everyone, facts(app="x", usernames=["bob"], packages=["kernel"]), facts()):
        assert matcher.recipients(message) == matcher.naive_recipients(message)


def test_rule_contexts_made_by_their_slots_are_the_dataclass_s_own() -> None:
    # ``_rule_context`` sets every field itself: a new field must be added there.
    assert [f.name for f in dataclasses.fields(RuleContext)] == [
        "owner",
        "ownership",
        "membership",
    ]
    ownership, membership = Ownership(), LocalDirectory()
    made = _rule_context("alice", ownership, membership)
    assert made == RuleContext("alice", ownership, membership)
    assert type(made) is RuleContext
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.owner = "bob"  # type: ignore[misc]


def test_matcher_one_value_filed_whole_through_refresh() -> None:
    """A filing of one value (held as the string itself) is filed, grouped and removed
    under that value, never under its letters."""
    rules = (r("package_involved", package="kernel"),)
    matcher = Matcher.from_snapshots(_watchers(rules, ["u1", "u2"]))
    assert matcher.stats().buckets == 1
    assert matcher.recipients(facts(packages=["k"])) == []
    assert [x.user for x in matcher.recipients(facts(packages=["kernel"]))] == ["u1", "u2"]
    matcher.replace_users((1,), [])
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("u2", "email", "f")]
    matcher.replace_users((2,), [])
    assert matcher.stats().buckets == 0


def _lists_streamed(rule_lists: _RuleLists, ids: list[int]) -> list[tuple[RuleSnapshot, ...]]:
    """The rule lists ``_streamed`` gives one user's filters with these ids."""
    rows = [(1, "alice", "email", True, i, f"f{i}", True, False) for i in ids]
    streamed = list(_streamed(None, (rule_lists, set()), iter(rows)))  # type: ignore[arg-type]
    (user,) = streamed
    assert not isinstance(user, UserSnapshot)  # nothing time-bound: plain rows
    user_id, _, [(_, _, filters)] = user
    assert user_id == 1
    return [rules for _, _, rules, _ in filters]


def test_streamed_users_read_their_rule_lists_dense_or_sparse() -> None:
    # ``_streamed`` reads the sealed table (or the dict of sparse ids) itself.
    lists = [(r("app_is", app="bodhi"),), (r("app_is", app="koji"),)]
    for ids, gap in (([3, 4, 6, 7], 5), ([5, 10**9, 2 * 10**9, 2 * 10**9 + 1], 11)):
        rule_lists = _RuleLists()
        rule_lists.lists.extend(lists)
        for filter_id, number in zip(ids, [0, 1, 1, 0], strict=True):
            rule_lists.add(filter_id, number)
        rule_lists.seal()
        # Filters without rules too: below, between and beyond the ids with rules.
        asked = [-5, 0, ids[0] - 1, *ids, gap, ids[-1] + 1]
        rows = [(1, "alice", "email", True, i, f"f{i}", True, False) for i in asked]
        users = list(_streamed(None, (rule_lists, set()), iter(rows)))  # type: ignore[arg-type]
        expected = [(), (), (), lists[0], lists[1], lists[1], lists[0], (), ()]
        filters = [(i, f"f{i}", rules, True) for i, rules in zip(asked, expected, strict=True)]
        assert users == [(1, "alice", [("email", True, filters)])]


def test_rule_snapshots_made_by_their_slots_are_the_dataclass_s_own() -> None:
    # ``_rule_snapshot`` sets every field itself: a new field must be added there.
    assert [f.name for f in dataclasses.fields(RuleSnapshot)] == [
        "name",
        "arguments",
        "negated",
        "expires_at",
    ]
    arguments = {"app": "bodhi"}
    made = _rule_snapshot("app_is", arguments, True)
    assert made == RuleSnapshot("app_is", arguments, True)
    assert type(made) is RuleSnapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.name = "topic_matches"  # type: ignore[misc]


def test_matcher_keys_a_one_argument_rule_as_any_other() -> None:
    # One argument is keyed without the sort, as ``(ref, negated, name, value)``.
    matcher = Matcher()
    spec = matcher.catalog.get("package_involved")
    for rule in (
        r("package_involved", package="kernel"),
        r("package_involved", negated=True, package="kernel"),
    ):
        compiled = matcher._compile_rule(spec, rule)
        assert compiled is not None
        assert compiled[4] == (spec.ref, rule.negated, "package", "kernel")
    spec = matcher.catalog.get("pertains_to_me")
    compiled = matcher._compile_rule(spec, r("pertains_to_me"))
    assert compiled is not None
    assert compiled[4] == (spec.ref, False)


def test_streamed_rule_lists_added_in_groups_in_any_order() -> None:
    # As PostgreSQL groups them: each distinct list with its filters' ids, unordered.
    lists = [(r("app_is", app="bodhi"),), (r("app_is", app="koji"),)]
    none: tuple[RuleSnapshot, ...] = ()
    for first, second in (([9, 3, 7], [4, 12]), ([2 * 10**9, 5], [10**9, 7])):
        rule_lists = _RuleLists()
        rule_lists.lists.extend(lists)
        rule_lists.add_many(first, 0)
        rule_lists.add_many(second, 1)
        rule_lists.add_many([], 1)
        rule_lists.seal()
        assert _lists_streamed(rule_lists, [*first, *second, 6]) == [
            *[lists[0]] * len(first),
            *[lists[1]] * len(second),
            none,
        ]


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"app": "bodhi"}',
        ' {"a": 1}',
        '{"a": 1} ',
        '{"a": 1}x',
        "\ufeff{}",
        "1e400",
        "NaN",
        "",
    ],
)
def test_stored_arguments_are_read_as_json_loads_reads_them(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError as refused:
        with pytest.raises(type(refused), match=re.escape(str(refused))):
            _json(text)
    else:
        assert repr(_json(text)) == repr(expected)  # NaN is not equal to itself


def test_streamed_users_as_snapshots_carry_every_field() -> None:
    # A streamed filter is (id, name, rules, active), with no pause: a new field of
    # ``FilterSnapshot`` must be streamed too.
    assert [f.name for f in dataclasses.fields(FilterSnapshot)] == [
        "filter_id",
        "name",
        "rules",
        "active",
        "paused_until",
    ]
    rules = (r("app_is", app="bodhi"),)
    made = _user_snapshot((5, "u", [("email", True, [(7, "f", rules, 0)]), ("irc", False, [])]))
    assert made == UserSnapshot(
        5,
        "u",
        (
            ContextSnapshot("email", (FilterSnapshot(7, "f", rules, False),), True),
            ContextSnapshot("irc", (), False),
        ),
    )
    assert made.contexts[0].filters[0].active is False  # a driver's 0 read as a bool


def test_matcher_ownership_hints_follow_set_ownership(db: Database) -> None:
    with db.begin() as session:
        insert_user(session, "alice", C("email", [F("mine", [r("package_owned_by_me")])]))
        insert_user(
            session,
            "bob",
            C("email", [F("python-sig", [r("package_owned_by_group", group="python-sig")])]),
        )
    matcher = load(db, ownership=Ownership({"alice": ["kernel"], "@python-sig": ["python3"]}))
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("alice", "email", "mine")]
    assert matcher.recipients(facts(packages=["glibc"])) == []
    assert matcher.stats().never == 0

    with db.begin() as session:
        matcher.set_ownership(Ownership({"alice": ["glibc"], "@python-sig": ["kernel"]}), session)
    assert who(matcher.recipients(facts(packages=["glibc"]))) == [("alice", "email", "mine")]
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("bob", "email", "python-sig")]
    assert matcher.recipients(facts(packages=["python3"])) == []

    # Owning nothing files a filter nowhere; it comes back with ownership.
    matcher.set_ownership(Ownership())
    assert matcher.stats().never == 2
    assert matcher.stats() == scanned_stats(matcher)
    assert matcher.recipients(facts(packages=["glibc", "kernel"])) == []
    matcher.set_ownership(Ownership({"alice": ["kernel"]}))
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("alice", "email", "mine")]


class Directory(LocalDirectory):
    """An account directory whose memberships a test changes, as Fedora Accounts would."""

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        super().__init__()
        self.groups = groups
        self.forgotten: list[str] = []

    def groups_of(self, name: str) -> frozenset[str]:
        return frozenset(self.groups.get(name, ()))

    def forget(self, accounts: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        self.forgotten.extend(sorted(accounts))


def test_matcher_follows_the_directory_without_the_database(db: Database) -> None:
    """A Fedora Accounts message files the group rules of the users it names anew,
    from the directory alone; filters that never read the directory stay filed."""
    with db.begin() as session:
        for name in ("alice", "carol"):
            insert_user(session, name, C("email", [F("groups", [r("member_of_group_involved")])]))
        insert_user(session, "bob", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
    directory = Directory({"alice": ["infra"], "carol": ["infra"]})
    matcher = load(db, membership=directory)
    qa, infra = facts(groups=["qa"], app="fas"), facts(groups=["infra"], app="fas")
    assert who(matcher.recipients(infra)) == [
        ("alice", "email", "groups"),
        ("carol", "email", "groups"),
    ]

    directory.groups = {"alice": ["qa"], "carol": ["qa"]}
    sponsored = facts(
        "fas-1",
        topic="org.fedoraproject.prod.fas.group.member.sponsor",
        app="fas",
        usernames=["alice", "bob"],
        groups=["qa"],
    )
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        refiled = matcher.follow_directory([sponsored])
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert (refiled, statements, directory.forgotten) == (1, [], ["alice", "bob"])
    # alice is filed under her new group. carol, not named, stays filed under her
    # old one while her rule reads the new one: she matches neither until a
    # message names her.
    assert who(matcher.recipients(qa)) == [("alice", "email", "groups")]
    assert matcher.recipients(infra) == []
    assert who(matcher.recipients(facts(app="bodhi"))) == [("bob", "email", "bodhi")]

    assert matcher.follow_directory([replace(sponsored, usernames=frozenset({"carol"}))]) == 1
    # Now every user matches as a fresh load with this directory does.
    fresh = load(db, membership=directory)
    for message in (qa, infra, facts(app="bodhi")):
        assert who(matcher.recipients(message)) == who(fresh.recipients(message))
    assert matcher.stats() == scanned_stats(matcher) == fresh.stats()
    assert matcher.follow_directory([facts(topic="org.fedoraproject.prod.bodhi.update")]) == 0


def test_matcher_refresh_users_reloads_only_those_users(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        bob = insert_user(session, "bob", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
    matcher = load(db)
    with db.begin() as session:
        replace_preferences(session, alice, C("email", [F("koji", [r("app_is", app="koji")])]))
        replace_preferences(session, bob, C("email", [F("koji", [r("app_is", app="koji")])]))
        matcher.refresh_users(session, [alice])
    assert who(matcher.recipients(facts(app="koji"))) == [("alice", "email", "koji")]
    assert who(matcher.recipients(facts(app="bodhi"))) == [("bob", "email", "bodhi")]


def test_matcher_refresh_removes_a_user_without_preferences(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
    matcher = load(db)
    with db.begin() as session:
        replace_preferences(session, alice)
        matcher.refresh_users(session, [alice])
    assert matcher.recipients(facts()) == []
    assert matcher.stats() == Matcher().stats()


def test_matcher_apply_changes_refreshes_users_with_new_events(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        bob = insert_user(session, "bob", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        # Events from before the load are already reflected in what it reads.
        session.add(ChangeEvent(user_id=alice, kind="old"))
    matcher = load(db)
    with db.begin() as session:
        assert matcher.apply_changes(session) == 0
        replace_preferences(session, alice, C("email", [F("koji", [r("app_is", app="koji")])]))
        replace_preferences(
            session, bob, C("email", [F("koji", [r("app_is", app="koji")])]), record=False
        )
    with db.begin() as session:
        assert matcher.apply_changes(session) == 1
        assert matcher.apply_changes(session) == 0
    assert who(matcher.recipients(facts(app="koji"))) == [("alice", "email", "koji")]
    assert who(matcher.recipients(facts(app="bodhi"))) == [("bob", "email", "bodhi")]
    with db.begin() as session:
        last = session.scalar(select(ChangeEvent.id).order_by(ChangeEvent.id.desc()).limit(1))
    assert matcher.last_change_id == last


def test_matcher_apply_changes_picks_up_an_event_committed_late(db: Database) -> None:
    with db.begin() as session:
        alice = insert_user(session, "alice", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        bob = insert_user(session, "bob", C("email", [F("bodhi", [r("app_is", app="bodhi")])]))
        session.add(ChangeEvent(id=10, user_id=alice, kind="seen at load"))
    matcher = load(db)
    with db.begin() as session:
        # Event 12 commits first; 11 was handed out earlier but commits later,
        # as two concurrent writers on PostgreSQL can do.
        session.add(ChangeEvent(id=12, user_id=alice, kind="test"))
    with db.begin() as session:
        assert matcher.apply_changes(session) == 1
    with db.begin() as session:
        replace_preferences(
            session, bob, C("email", [F("koji", [r("app_is", app="koji")])]), record=False
        )
        session.add(ChangeEvent(id=11, user_id=bob, kind="late"))
    with db.begin() as session:
        assert matcher.apply_changes(session) == 1
    assert who(matcher.recipients(facts(app="koji"))) == [("bob", "email", "koji")]


def test_matcher_load_uses_a_few_queries_whatever_the_number_of_users(db: Database) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    with db.begin() as session:
        for i in range(60):
            insert_user(
                session,
                f"user{i}",
                C(
                    "email",
                    [
                        F("a", [r("app_is", app="bodhi"), r("pertains_to_me")]),
                        F("b", [r("package_involved", package=f"pkg{i}")]),
                    ],
                ),
                C("irc", [F("c", [r("user_involved", username="alice")])]),
            )
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.begin() as session:
            matcher = Matcher.load(session)
            snapshots = load_snapshots(session, range(1, 1000))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert matcher.stats().users == 60
    assert matcher.stats().filters == 180
    assert len(snapshots) == 60
    assert len(statements) <= 8, statements


def test_matcher_database_load_equals_in_memory_snapshots(db: Database) -> None:
    contexts = [
        C(
            "email",
            [
                F("a", [r("app_is", app="bodhi"), r("triggered_by_me", negated=True)]),
                F("off", [r("pertains_to_me")], active=False),
                F("empty"),
            ],
        ),
        C("irc", [F("b", [r("topic_matches", pattern="*.bodhi.*")])], enabled=False),
    ]
    with db.begin() as session:
        uid = insert_user(session, "alice", *contexts)
        [loaded] = load_snapshots(session)
    assert loaded.user_id == uid and loaded.name == "alice"
    assert [c.context for c in loaded.contexts] == ["email", "irc"]
    assert [c.enabled for c in loaded.contexts] == [True, False]
    assert [f.name for f in loaded.contexts[0].filters] == ["a", "off", "empty"]
    assert [f.active for f in loaded.contexts[0].filters] == [True, False, True]
    assert loaded.contexts[0].filters[0].rules == (
        r("app_is", app="bodhi"),
        r("triggered_by_me", negated=True),
    )


# -- the index against the naive oracle, on the corpus ---------------------------------------


@dataclass(frozen=True)
class Names:
    """Argument values that occur in the corpus, so that rules actually match."""

    usernames: tuple[str, ...]
    packages: tuple[str, ...]
    apps: tuple[str, ...]
    topics: tuple[str, ...]
    groups: tuple[str, ...]
    words: tuple[str, ...]


@pytest.fixture(scope="module")
def names(corpus_facts: list[MessageFacts]) -> Names:
    users: set[str] = set()
    for f in corpus_facts:
        users |= f.usernames
        if f.agent_name:
            users.add(f.agent_name)
    words = {w.strip(".,:'\"()").lower() for f in corpus_facts for w in f.summary.split()}
    return Names(
        usernames=(*sorted(users), "nobody-at-all"),
        packages=(*sorted({p for f in corpus_facts for p in f.packages}), "no-such-pkg"),
        apps=tuple(sorted({f.app_name for f in corpus_facts})),
        topics=tuple(sorted({f.topic for f in corpus_facts})),
        groups=(*sorted({g for f in corpus_facts for g in f.groups}), "packager"),
        words=tuple(sorted(w for w in words if 2 < len(w) < 20))[:400],
    )


@pytest.fixture(scope="module")
def probes(names: Names) -> list[MessageFacts]:
    """Made-up messages naming each corpus package, user and group.

    Few corpus messages carry packages or usernames; these give the ownership
    and personal rules many more chances to match (or to be missed).
    """
    made = []
    for i, package in enumerate(names.packages):
        made.append(
            facts(
                f"probe-package-{i}",
                topic=names.topics[i % len(names.topics)],
                app=names.apps[i % len(names.apps)],
                packages=[package, names.packages[(7 * i) % len(names.packages)]],
                usernames=[names.usernames[i % len(names.usernames)]],
                agent=names.usernames[(i + 3) % len(names.usernames)],
            )
        )
    for i, user in enumerate(names.usernames):
        made.append(
            facts(
                f"probe-user-{i}",
                topic=names.topics[(5 * i) % len(names.topics)],
                app=names.apps[(3 * i) % len(names.apps)],
                usernames=[user],
                agent=user if i % 2 else None,
                groups=[names.groups[i % len(names.groups)]],
                severity=("DEBUG", "INFO", "WARNING", "ERROR")[i % 4],
            )
        )
    return made


def _pattern(names: Names) -> st.SearchStrategy[str]:
    topics = st.sampled_from(names.topics)
    return st.one_of(
        topics,
        topics.map(lambda t: t.rsplit(".", 1)[0] + ".*"),
        topics.map(lambda t: "*." + ".".join(t.split(".")[-2:])),
        topics.map(lambda t: t.replace("prod", "stg")),
        st.just("*"),
    )


def _argument(parameter: Parameter, names: Names) -> st.SearchStrategy[Any]:
    every_name = (
        names.usernames + names.packages + names.groups + tuple(a.lower() for a in names.apps)
    )
    if parameter.kind == "choice":
        return st.sampled_from(parameter.choices)
    if parameter.kind == "integer":
        return st.integers(-1, 50)
    if parameter.kind == "glob":
        return st.one_of(_pattern(names), st.sampled_from(every_name).map(lambda n: f"*{n}*"))
    if parameter.kind == "text":
        return st.sampled_from(names.words + every_name)
    by_name = {
        "app": names.apps,
        "username": names.usernames,
        "package": names.packages,
        "group": names.groups,
    }
    return st.sampled_from(by_name.get(parameter.name, every_name))


def _rules(catalog: Catalog, names: Names) -> st.SearchStrategy[RuleSnapshot]:
    specs = sorted(catalog, key=lambda s: s.name)

    @st.composite
    def draw_rule(draw: st.DrawFn) -> RuleSnapshot:
        if draw(st.integers(0, 40)) == 0:
            return RuleSnapshot("uninstalled:rule", {}, draw(st.booleans()))
        spec = draw(st.sampled_from(specs))
        arguments = {p.name: draw(_argument(p, names)) for p in spec.parameters}
        name = spec.ref if draw(st.integers(0, 9)) == 0 else spec.name
        return RuleSnapshot(name, arguments, draw(st.integers(0, 3)) == 0)

    return draw_rule()


def _users(
    catalog: Catalog, names: Names, first_id: int = 1, max_users: int = 6
) -> st.SearchStrategy[list[UserSnapshot]]:
    rules = _rules(catalog, names)
    mostly = st.integers(0, 5).map(lambda x: x != 0)

    @st.composite
    def draw_users(draw: st.DrawFn) -> list[UserSnapshot]:
        people = draw(
            st.lists(st.sampled_from(names.usernames), min_size=1, max_size=max_users, unique=True)
        )
        users = []
        for user_id, person in enumerate(people, start=first_id):
            contexts = []
            for context in draw(
                st.lists(st.sampled_from(CONTEXTS), min_size=1, max_size=3, unique=True)
            ):
                filters = tuple(
                    FilterSnapshot(
                        next(_filter_ids),
                        f"f{k}",
                        tuple(draw(st.lists(rules, min_size=draw(mostly), max_size=3))),
                        draw(mostly),
                    )
                    for k in range(draw(st.integers(0, 3)))
                )
                contexts.append(ContextSnapshot(context, filters, draw(mostly)))
            users.append(UserSnapshot(user_id, person, tuple(contexts)))
        return users

    return draw_users()


def _ownership(names: Names, users: Iterable[UserSnapshot]) -> st.SearchStrategy[Ownership]:
    """Packages owned mostly by the population's own users (so their rules can match)."""
    people = tuple(sorted({u.name for u in users}))
    owners = st.sampled_from(names.usernames + tuple("@" + g for g in names.groups))
    if people:
        owners = st.one_of(st.sampled_from(people), owners)
    return st.dictionaries(
        owners, st.lists(st.sampled_from(names.packages), max_size=8), max_size=12
    ).map(Ownership)


def _offered() -> st.SearchStrategy[list[str]]:
    """Usually every context; sometimes only a few (maybe none)."""
    return st.integers(0, 3).flatmap(
        lambda x: st.just(list(CONTEXTS)) if x else st.lists(st.sampled_from(CONTEXTS), unique=True)
    )


def scanned_stats(matcher: Matcher) -> MatcherStats:
    """``matcher.stats()`` counted over every entry and group, as it once was: the
    matcher now keeps the counts as it files and unfiles."""
    entries = [e for state in matcher._users.values() for e in _entries_of(state)]
    indexed = sum(1 for e in entries if e.key is not None and e.values)
    always = sum(1 for e in entries if e.key is None)
    groups = [g for g in matcher._groups.values() if isinstance(g, _SharedFilter)]
    return MatcherStats(
        users=len(matcher._users),
        filters=len(entries),
        indexed=indexed,
        always=always,
        never=len(entries) - indexed - always,
        buckets=sum(len(buckets) for buckets in matcher._index.values()),
        groups=len(groups),
        grouped=sum(len(g.members) for g in groups),
    )


def assert_same_answers(
    matcher: Matcher, messages: Sequence[MessageFacts], other: Matcher | None = None
) -> None:
    assert matcher.stats() == scanned_stats(matcher)
    if other is not None:
        assert other.stats() == scanned_stats(other)
    for message in messages:
        expected = matcher.naive_recipients(message)
        assert matcher.recipients(message) == expected, message.id
        if other is not None:
            assert other.recipients(message) == expected, message.id


_PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Passing takes seconds; a failure then shrinks for minutes, and the minimal
#: example is worth the wait.
_SHRINK_TIME = pytest.mark.timeout(900)


@_SHRINK_TIME
@_PROPERTY
@given(data=st.data())
def test_matcher_index_agrees_with_naive_on_the_corpus(
    data: st.DataObject,
    names: Names,
    corpus_facts: list[MessageFacts],
    probes: list[MessageFacts],
) -> None:
    catalog = catalog_with(BOOM, FLAKY_APP)
    users = data.draw(_users(catalog, names), label="users")
    ownership = data.draw(_ownership(names, users), label="ownership")
    matcher = Matcher.from_snapshots(
        users,
        catalog=catalog,
        ownership=ownership,
        contexts=data.draw(_offered(), label="contexts"),
    )
    assert_same_answers(matcher, corpus_facts + probes)


@_SHRINK_TIME
@settings(_PROPERTY, max_examples=100)  # each example replays several updates
@given(data=st.data())
def test_matcher_incremental_updates_equal_a_full_reload(
    data: st.DataObject,
    names: Names,
    corpus_facts: list[MessageFacts],
    probes: list[MessageFacts],
) -> None:
    catalog = catalog_with(BOOM, FLAKY_APP)
    contexts = data.draw(_offered(), label="contexts")
    current = {u.user_id: u for u in data.draw(_users(catalog, names), label="users")}
    ownership = data.draw(_ownership(names, current.values()), label="ownership")
    matcher = Matcher.from_snapshots(
        current.values(), catalog=catalog, ownership=ownership, contexts=contexts
    )
    for step in range(data.draw(st.integers(1, 4), label="steps")):
        action = data.draw(st.sampled_from(["replace", "remove", "add", "ownership"]))
        if action == "ownership":
            ownership = data.draw(_ownership(names, current.values()))
            matcher.set_ownership(ownership)
            continue
        ids = data.draw(st.lists(st.sampled_from(sorted(current) or [1]), unique=True, max_size=3))
        fresh = data.draw(_users(catalog, names, first_id=100 * (step + 1), max_users=3))
        if action == "replace":
            fresh = [replace(u, user_id=i) for u, i in zip(fresh, ids, strict=False)]
        for i in ids if action != "add" else ():
            current.pop(i, None)
        if action == "remove":
            fresh = []
        current.update({u.user_id: u for u in fresh})
        matcher.replace_users(ids if action != "add" else (), fresh)
    reloaded = Matcher.from_snapshots(
        current.values(), catalog=catalog, ownership=ownership, contexts=contexts
    )
    assert matcher.stats() == reloaded.stats()
    assert_same_answers(reloaded, corpus_facts + probes, other=matcher)


def test_matcher_database_refresh_equals_a_full_reload(
    db: Database, names: Names, corpus_facts: list[MessageFacts]
) -> None:
    """The DB path end to end: load, change some users, apply_changes vs a fresh load."""
    people = names.usernames[:12]
    with db.begin() as session:
        ids = [
            insert_user(
                session,
                person,
                C(
                    "email",
                    [
                        F("me", [r("pertains_to_me"), r("triggered_by_me", negated=True)]),
                        F(
                            "pkg",
                            [
                                r(
                                    "package_involved",
                                    package=names.packages[i % len(names.packages)],
                                )
                            ],
                        ),
                    ],
                ),
                C("irc", [F("app", [r("app_is", app=names.apps[i % len(names.apps)])])]),
            )
            for i, person in enumerate(people)
        ]
    ownership = Ownership({p: names.packages[i::7] for i, p in enumerate(people)})
    matcher = load(db, ownership=ownership)
    with db.begin() as session:
        for i in ids[::3]:
            replace_preferences(
                session,
                i,
                C(
                    "push",
                    [
                        F("owned", [r("package_owned_by_me")]),
                        F(
                            "topic",
                            [r("topic_matches", pattern=names.topics[i % len(names.topics)])],
                        ),
                    ],
                ),
            )
        replace_preferences(session, ids[1])
    with db.begin() as session:
        assert matcher.apply_changes(session) == len(ids[::3]) + 1
        reloaded = Matcher.load(session, ownership=ownership)
    assert matcher.stats() == reloaded.stats()
    assert matcher.stats().users == len(ids) - 1
    assert_same_answers(reloaded, corpus_facts, other=matcher)
    assert any(matcher.recipients(f) for f in corpus_facts)


def test_matcher_files_owned_package_filters_once_under_their_owner() -> None:
    """A filter about someone's packages (``package_owned_by_me``, ``package_owned_by``,
    ``package_owned_by_group``) is filed once under that owner and found through
    ``owners_of`` of a message's packages; a hint of equal rank naming fewer packages
    still wins, and owning nothing still files it nowhere. Each answer is the naive
    matcher's, through replacing users and ``set_ownership``."""
    ownership = Ownership(
        {
            "alice": ["kernel", "glibc", "bash"],
            "bob": ["bash"],
            "@python-sig": ["python3", "python-pip"],
        }
    )
    users = [
        snapshot(
            1,
            "alice",
            C("email", [F("mine", [r("package_owned_by_me")])]),
            C(
                "irc",
                [
                    F(
                        "my kernel",
                        [r("package_owned_by_me"), r("package_involved", package="kernel")],
                    )
                ],
            ),
        ),
        snapshot(2, "bob", C("email", [F("alice's", [r("package_owned_by", username="alice")])])),
        snapshot(
            3,
            "carol",
            C("email", [F("sig", [r("package_owned_by_group", group="python-sig")])]),
            C("irc", [F("mine", [r("package_owned_by_me")])]),
        ),
        snapshot(
            4,
            "dave",
            C(
                "email",
                [
                    F(
                        "bob's bash",
                        [
                            r("package_owned_by", username="bob"),
                            r("package_involved", package="bash"),
                        ],
                    )
                ],
            ),
        ),
    ]
    matcher = Matcher.from_snapshots(users, ownership=ownership)
    filed = {(e.key, e.values) for state in matcher._users.values() for e in _entries_of(state)}
    assert filed == {
        ("package owner", "alice"),  # alice's "mine", bob's "alice's"
        ("package", "kernel"),  # one package is fewer than alice's three
        ("package owner", "@python-sig"),
        ("package", ()),  # carol owns nothing: nowhere
        ("package owner", "bob"),  # a tie of one package each: the first hint
    }
    assert matcher.stats().never == 1
    messages = [
        facts(packages=[p]) for p in ("kernel", "glibc", "bash", "python3", "python-pip", "zsh")
    ] + [facts(packages=["bash", "python3", "kernel"]), facts()]
    assert who(matcher.recipients(facts(packages=["bash"]))) == [
        ("alice", "email", "mine"),
        ("bob", "email", "alice's"),
        ("dave", "email", "bob's bash"),
    ]
    assert who(matcher.recipients(facts(packages=["python-pip"]))) == [("carol", "email", "sig")]
    assert_same_answers(matcher, messages)

    matcher.set_ownership(Ownership({"carol": ["zsh"], "@python-sig": ["kernel"]}))
    assert who(matcher.recipients(facts(packages=["zsh"]))) == [("carol", "irc", "mine")]
    # alice owns nothing now: her "my kernel" filter is filed under "kernel" and fails.
    assert who(matcher.recipients(facts(packages=["kernel"]))) == [("carol", "email", "sig")]
    assert_same_answers(matcher, messages)

    matcher.replace_users([1, 3], [users[2]])
    assert_same_answers(matcher, messages)
    matcher.replace_users([2, 3, 4], [])
    assert matcher.stats() == Matcher().stats()
    assert matcher._by_owner == {}


def test_matcher_files_by_packages_when_a_hint_s_owner_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A third-party hint whose ``owner`` raises or names nobody: its filter is filed
    under the packages themselves (logged when it raised), and still found."""

    def owned(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
        return context.ownership.packages_of(str(arguments["who"]))

    def broken_owner(arguments: Mapping[str, Any], context: RuleContext) -> str:
        if arguments["who"] == "alice":
            raise RuntimeError("broken owner")
        return ""

    def holds(message: MessageFacts, context: RuleContext, who: str) -> bool:
        return not context.ownership.packages_of(who).isdisjoint(message.packages)

    catalog = Catalog()
    catalog.add(
        RuleSpec(
            "owned",
            "test:owned",
            holds,
            "Owned",
            "",
            (Parameter("who", "whose"),),
            IndexHint("package", owned, 15, owner=broken_owner),
        )
    )
    users = [
        snapshot(1, "x", C("email", [F("a", [r("owned", who="alice")])])),
        snapshot(2, "y", C("email", [F("b", [r("owned", who="bob")])])),
    ]
    ownership = Ownership({"alice": ["kernel", "bash"], "bob": ["bash"]})
    with caplog.at_level(logging.WARNING, logger="fmn_core.matcher"):
        matcher = Matcher.from_snapshots(users, catalog=catalog, ownership=ownership)
    assert "broken owner" in caplog.text
    assert matcher._by_owner == {}
    assert who(matcher.recipients(facts(packages=["bash"]))) == [
        ("x", "email", "a"),
        ("y", "email", "b"),
    ]
    assert_same_answers(matcher, [facts(packages=[p]) for p in ("kernel", "bash", "zsh")])


def test_catalog_hints_with_an_owner_name_exactly_that_owner_s_packages() -> None:
    """Every rule of the catalog whose hint declares an owner (``IndexHint.owner``)
    hints exactly ``packages_of(owner)``: the matcher files it under that owner
    instead, and finds it through ``owners_of``."""
    ownership = Ownership({"me": ["a"], "someone": ["b", "c"], "@someone": ["d"]})
    context = RuleContext("me", ownership, LocalDirectory())
    declared = [spec for spec in default_catalog() if spec.hint and spec.hint.owner]
    assert {spec.name for spec in declared} >= {
        "package_owned_by_me",
        "package_owned_by",
        "package_owned_by_group",
        "anitya_new_release_for_my_packages",
        "distgit_pr_on_my_packages",
    }
    for spec in declared:
        assert spec.hint is not None and spec.hint.owner is not None
        arguments = spec.validate({p.name: "someone" for p in spec.parameters})
        owner = spec.hint.owner(arguments, context)
        assert spec.hint.key == "package"
        assert spec.index_values(arguments, context) == ownership.packages_of(owner), spec.name
        assert ownership.packages_of(owner), spec.name  # the owner is one that owns some


def test_matcher_files_a_lead_naming_its_owner_without_calling_its_hint() -> None:
    """A filter whose lead hint declares ``names_owner`` is filed under its owner's
    name, as ``_filing`` over the hint's values would file it, without the hint
    being called; a hint that does not declare it is called as before. Through
    ``set_ownership`` and replacing users, each answer is the naive matcher's."""
    calls: list[str] = []

    def me(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
        calls.append(context.owner)
        return (context.owner,)

    def concerns(message: MessageFacts, context: RuleContext) -> bool:
        return context.owner in message.usernames

    catalog = Catalog()
    for name, declared in (("declared", True), ("undeclared", False)):
        catalog.add(
            RuleSpec(
                name,
                f"test:{name}",
                concerns,
                name,
                "",
                (),
                IndexHint("username", me, 10, names_owner=declared),
            )
        )
    users = [
        snapshot(1, "alice", C("email", [F("a", [r("declared")]), F("b", [r("declared")])])),
        snapshot(2, "bob", C("irc", [F("c", [r("undeclared")])])),
        snapshot(3, "carol", C("email", [F("d", [r("declared")])]), C("irc", [F("e", [])])),
    ]
    matcher = Matcher.from_snapshots(users, catalog=catalog)
    assert calls == ["bob"]
    filed = {
        (e.filter_name, e.key, e.values, e.dynamic)
        for state in matcher._users.values()
        for e in _entries_of(state)
    }
    assert filed == {
        ("a", "username", "alice", False),
        ("b", "username", "alice", False),
        ("c", "username", "bob", False),
        ("d", "username", "carol", False),
    }
    messages = [facts(usernames=[n]) for n in ("alice", "bob", "carol", "dave")]
    messages.append(facts(usernames=["alice", "carol"]))
    assert who(matcher.recipients(messages[-1])) == [
        ("alice", "email", "a"),
        ("carol", "email", "d"),
    ]
    assert_same_answers(matcher, messages)
    matcher.set_ownership(Ownership({"alice": ["kernel"]}))
    assert_same_answers(matcher, messages)
    matcher.replace_users([1], [snapshot(1, "alice", C("irc", [F("f", [r("declared")])]))])
    assert who(matcher.recipients(messages[0])) == [("alice", "irc", "f")]
    assert_same_answers(matcher, messages)


def test_catalog_hints_declaring_names_owner_name_exactly_the_owner() -> None:
    """Every rule of the catalog whose hint declares ``names_owner`` hints exactly
    ``(context.owner,)``, and every rule hinted by ``hints.owner`` declares it."""
    from fmn_core.catalog import hints

    ownership = Ownership({"me": ["a"], "someone": ["b"]})
    declared = [spec for spec in default_catalog() if spec.hint and spec.hint.names_owner]
    assert {spec.name for spec in declared} >= {"pertains_to_me", "triggered_by_me"}
    owner_hinted = {
        spec.name for spec in default_catalog() if spec.hint and spec.hint.values is hints.owner
    }
    assert {spec.name for spec in declared} == owner_hinted
    for spec in declared:
        assert spec.hint is not None and spec.hint.owner is None
        arguments = spec.validate({p.name: "someone" for p in spec.parameters})
        for owner in ("me", "someone", "@group"):
            context = RuleContext(owner, ownership, LocalDirectory())
            assert spec.index_values(arguments, context) == frozenset((owner,)), spec.name
