"""Groups of identical filters: evaluated once per message for all their owners.

fmn_core.matcher groups the filters of different users whose rules (with their
arguments) are the same, never read whose filter they are, and are filed under
the same index values; a popular ``app_is`` filter then costs one evaluation
per message, not one per owner. These tests hold the groups to the naive
evaluation of every filter, through loads, updates and ownership changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmn_core.catalog.generic import app_is, package_owned_by_me, pertains_to_me, topic_matches
from fmn_core.matcher import Matcher, UserSnapshot, _impersonal
from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog, IndexHint, Parameter, RuleContext, RuleSpec

from .test_matcher import (
    BOOM,
    FLAKY_APP,
    C,
    F,
    Names,
    Ownership,
    _offered,
    _ownership,
    assert_same_answers,
    catalog_with,
    facts,
    names,  # noqa: F401 - the fixture
    probes,  # noqa: F401 - the fixture
    r,
    snapshot,
    who,
)


def _impersonal_counter(calls: list[str], *, exact: bool = False) -> RuleSpec:
    def counted_app(message: MessageFacts, context: RuleContext, app: str) -> bool:
        calls.append(app)
        return message.app_name.lower() == app

    return RuleSpec(
        "counted_app",
        "tests:counted_app",
        counted_app,
        "Counted app",
        "",
        (Parameter("app", "an app"),),
        IndexHint("app", lambda arguments, context: (str(arguments["app"]),), 40, exact=exact),
    )


def test_impersonal_is_read_from_the_rule_function() -> None:
    assert _impersonal(app_is)
    assert _impersonal(topic_matches)
    assert not _impersonal(pertains_to_me)  # reads context.owner
    assert not _impersonal(package_owned_by_me)

    def through_a_closure(message: MessageFacts, context: RuleContext) -> bool:
        return any(name == context.owner for name in message.usernames)

    def only_by_name(message: MessageFacts, context: RuleContext) -> bool:
        owner = "context"  # a local named like the parameter is not the parameter
        return owner in message.usernames

    assert not _impersonal(through_a_closure)
    assert _impersonal(only_by_name)
    assert not _impersonal(str.isupper)  # not a Python function: assumed personal


def test_a_popular_filter_is_evaluated_once_per_message_for_all_its_owners() -> None:
    calls: list[str] = []
    catalog = catalog_with(_impersonal_counter(calls))
    users = [
        snapshot(i, f"u{i}", C("email", [F("bodhi", [r("counted_app", app="bodhi")])]))
        for i in range(1, 101)
    ]
    matcher = Matcher.from_snapshots(users, catalog=catalog)
    stats = matcher.stats()
    assert (stats.filters, stats.groups, stats.grouped) == (100, 1, 100)

    found = matcher.recipients(facts(app="bodhi"))
    assert [x.user for x in found] == [f"u{i}" for i in sorted(range(1, 101), key=int)]
    assert calls == ["bodhi"]
    calls.clear()
    assert matcher.recipients(facts(app="koji")) == []
    assert calls == []  # filed under "bodhi": not even a candidate
    assert matcher.count_candidates(facts(app="bodhi")) == 1


def test_a_group_found_through_an_exact_hint_skips_that_rule_and_evaluates_the_rest() -> None:
    calls: list[str] = []
    catalog = catalog_with(_impersonal_counter(calls, exact=True))
    rules = [r("counted_app", app="bodhi"), r("topic_matches", pattern="*.bodhi.update.comment")]
    users = [snapshot(i, f"u{i}", C("email", [F("comments", rules)])) for i in range(1, 51)]
    matcher = Matcher.from_snapshots(users, catalog=catalog)
    assert matcher.stats().groups == 1

    comment = facts(app="bodhi", topic="org.fedoraproject.prod.bodhi.update.comment")
    assert [x.user for x in matcher.recipients(comment)] == [f"u{i}" for i in range(1, 51)]
    assert calls == []  # found under "bodhi": the index's lookup was that rule's check
    # The rest of the rules still decide: the glob is not an index key.
    request = facts(app="bodhi", topic="org.fedoraproject.prod.bodhi.update.request.testing")
    assert matcher.recipients(request) == []
    # The naive evaluation, which the index is held to, evaluates every rule.
    assert matcher.naive_recipients(comment) == matcher.recipients(comment)
    assert calls == ["bodhi"] * 50


def test_a_group_member_still_loses_to_an_earlier_filter_of_its_own_context() -> None:
    shared = F("all bodhi", [r("app_is", app="bodhi")])
    users = [
        # Her first filter matches too: the recipient names it, not the shared one.
        snapshot(1, "alice", C("email", [F("mine", [r("pertains_to_me")]), shared])),
        # Here the shared filter comes first.
        snapshot(2, "bob", C("email", [shared, F("mine", [r("pertains_to_me")])])),
        snapshot(3, "carol", C("email", [shared]), C("irc", [shared])),
    ]
    matcher = Matcher.from_snapshots(users)
    assert matcher.stats().groups == 1
    message = facts(app="bodhi", usernames=["alice", "bob"])
    assert who(matcher.recipients(message)) == [
        ("alice", "email", "mine"),
        ("bob", "email", "all bodhi"),
        ("carol", "email", "all bodhi"),
        ("carol", "irc", "all bodhi"),
    ]
    assert matcher.recipients(message) == matcher.naive_recipients(message)


def test_a_group_and_other_users_filters_answer_in_user_then_context_order() -> None:
    shared = F("all bodhi", [r("app_is", app="bodhi")])
    mine = F("mine", [r("pertains_to_me")])
    # Users whose own filters match sit between, before and after the group's
    # members, in contexts that sort before and after theirs.
    users = [
        snapshot(1, "dora", C("irc", [mine])),
        snapshot(2, "abe", C("email", [shared]), C("irc", [shared])),
        snapshot(3, "cy", C("email", [mine]), C("irc", [mine])),
        snapshot(4, "bo", C("irc", [shared])),
        snapshot(5, "al", C("email", [mine])),
        snapshot(6, "eve", C("email", [shared])),
    ]
    matcher = Matcher.from_snapshots(users)
    assert matcher.stats().groups == 1
    message = facts(app="bodhi", usernames=["dora", "cy", "al"])
    assert [(x.user_id, x.user, x.context, x.filter_name) for x in matcher.recipients(message)] == [
        (1, "dora", "irc", "mine"),
        (2, "abe", "email", "all bodhi"),
        (2, "abe", "irc", "all bodhi"),
        (3, "cy", "email", "mine"),
        (3, "cy", "irc", "mine"),
        (4, "bo", "irc", "all bodhi"),
        (5, "al", "email", "mine"),
        (6, "eve", "email", "all bodhi"),
    ]
    assert matcher.recipients(message) == matcher.naive_recipients(message)
    # The group's own answer is not changed by the message's other recipients.
    assert [x.user for x in matcher.recipients(facts(app="bodhi"))] == ["abe", "abe", "bo", "eve"]


def test_personal_filters_are_not_grouped() -> None:
    users = [
        snapshot(
            i,
            f"u{i}",
            C("email", [F("me", [r("pertains_to_me")]), F("mine", [r("package_owned_by_me")])]),
        )
        for i in range(1, 4)
    ]
    matcher = Matcher.from_snapshots(users, ownership=Ownership({"u1": ["kernel"]}))
    assert matcher.stats().groups == 0
    assert who(matcher.recipients(facts(usernames=["u2"], packages=["kernel"]))) == [
        ("u1", "email", "mine"),
        ("u2", "email", "me"),
    ]


def test_filters_with_other_arguments_or_negation_are_other_groups() -> None:
    users = [
        snapshot(1, "a", C("email", [F("f", [r("app_is", app="bodhi")])])),
        snapshot(2, "b", C("email", [F("f", [r("app_is", app="bodhi")])])),
        snapshot(3, "c", C("email", [F("f", [r("app_is", app="koji")])])),
        snapshot(
            4,
            "d",
            C(
                "email",
                [
                    F(
                        "f",
                        [
                            r("app_is", app="bodhi"),
                            r("topic_matches", pattern="*.comment", negated=True),
                        ],
                    )
                ],
            ),
        ),
    ]
    users.append(snapshot(5, "e", C("email", [F("f", [r("app_is", app="koji")])])))
    matcher = Matcher.from_snapshots(users)
    stats = matcher.stats()
    # a+b and c+e; d's extra rule keeps it alone (a filter alone is no group).
    assert (stats.groups, stats.grouped) == (2, 4)
    assert who(matcher.recipients(facts(app="bodhi"))) == [("a", "email", "f"), ("b", "email", "f")]
    message = facts(app="bodhi", topic="org.fedoraproject.prod.bodhi.update.request")
    assert [x.user for x in matcher.recipients(message)] == ["a", "b", "d"]
    assert [x.user for x in matcher.recipients(facts(app="koji"))] == ["c", "e"]


def test_removing_members_keeps_the_group_until_one_is_left() -> None:
    shared = F("bodhi", [r("app_is", app="bodhi")])
    matcher = Matcher.from_snapshots(
        [snapshot(i, f"u{i}", C("email", [shared])) for i in (1, 2, 3, 4)]
    )
    matcher.replace_users([1], [])
    assert [x.user for x in matcher.recipients(facts(app="bodhi"))] == ["u2", "u3", "u4"]
    assert (matcher.stats().groups, matcher.stats().grouped) == (1, 3)
    matcher.replace_users([2, 4], [])
    assert [x.user for x in matcher.recipients(facts(app="bodhi"))] == ["u3"]
    # The last one is filed as itself again, as a fresh load files a lone filter.
    assert (matcher.stats().groups, matcher.stats().buckets) == (0, 1)
    matcher.replace_users([], [snapshot(5, "u5", C("email", [shared]))])
    assert [x.user for x in matcher.recipients(facts(app="bodhi"))] == ["u3", "u5"]
    assert (matcher.stats().groups, matcher.stats().grouped) == (1, 2)
    matcher.replace_users([5], [])
    matcher.replace_users([3], [snapshot(3, "u3", C("email", [F("k", [r("app_is", app="koji")])]))])
    assert matcher.recipients(facts(app="bodhi")) == []
    stats = matcher.stats()
    # bodhi's group is gone; koji's filter is alone, so filed as itself, not as a group.
    assert (stats.groups, stats.grouped, stats.buckets) == (0, 0, 1)
    matcher.replace_users([3], [])
    stats = matcher.stats()
    assert (stats.groups, stats.buckets, stats.always) == (0, 0, 0)


def test_a_rule_failing_in_a_group_misses_for_every_member_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = [
        snapshot(
            i, f"u{i}", C("email", [F("boom", [r("boom")]), F("bodhi", [r("app_is", app="bodhi")])])
        )
        for i in (1, 2)
    ]
    matcher = Matcher.from_snapshots(users, catalog=catalog_with(BOOM))
    message = facts(app="bodhi")
    assert who(matcher.recipients(message)) == [("u1", "email", "bodhi"), ("u2", "email", "bodhi")]
    assert sum("rule boom raised" in rec.getMessage() for rec in caplog.records) == 1


# -- against the naive evaluation, with many users sharing filters ---------------------------


def _shared_population(
    pool_names: Names,
    catalog: Catalog,
    first_id: int = 1,
    max_users: int = 12,
) -> st.SearchStrategy[list[UserSnapshot]]:
    """Users who pick their filters from a small common pool: most filters are shared."""
    apps = st.sampled_from(tuple(a.lower() for a in pool_names.apps[:6]))
    topics = st.sampled_from(pool_names.topics[:8])
    pool = st.one_of(
        apps.map(lambda a: (r("app_is", app=a),)),
        st.tuples(apps, topics).map(
            lambda at: (r("app_is", app=at[0]), r("topic_matches", pattern=at[1]))
        ),
        apps.map(lambda a: (r("app_is", app=a), r("triggered_by_me", negated=True))),
        apps.map(lambda a: (r("flaky_app", app=a),)),
        st.just((r("severity_at_least", level="WARNING"),)),
        st.just((r("pertains_to_me"),)),
        st.just((r("package_owned_by_me"),)),
        apps.map(
            lambda a: (r("app_is", app=a), r("topic_matches", pattern="*.comment", negated=True))
        ),
    )

    @st.composite
    def draw(draw: st.DrawFn) -> list[UserSnapshot]:
        people = draw(
            st.lists(
                st.sampled_from(pool_names.usernames), min_size=1, max_size=max_users, unique=True
            )
        )
        users = []
        for user_id, person in enumerate(people, start=first_id):
            contexts = []
            for context in draw(
                st.lists(st.sampled_from(("email", "irc")), min_size=1, unique=True)
            ):
                rules: Sequence[Sequence[object]] = draw(st.lists(pool, min_size=1, max_size=3))
                contexts.append(
                    C(
                        context,
                        [
                            F(f"f{k}", list(rs))  # type: ignore[arg-type]
                            for k, rs in enumerate(rules)
                        ],
                    )
                )
            users.append(snapshot(user_id, person, *contexts))
        return users

    return draw()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_grouped_matcher_agrees_with_naive_through_updates(
    data: st.DataObject,
    names: Names,  # noqa: F811 - the fixture imported above
    corpus_facts: list[MessageFacts],
    probes: list[MessageFacts],  # noqa: F811
) -> None:
    catalog = catalog_with(FLAKY_APP)
    contexts = data.draw(_offered(), label="contexts")
    current = {u.user_id: u for u in data.draw(_shared_population(names, catalog))}
    ownership = data.draw(_ownership(names, current.values()), label="ownership")
    matcher = Matcher.from_snapshots(
        current.values(), catalog=catalog, ownership=ownership, contexts=contexts
    )
    messages = corpus_facts[::7] + probes[::3]
    assert_same_answers(matcher, messages)
    for step in range(data.draw(st.integers(1, 3), label="steps")):
        ids = data.draw(st.lists(st.sampled_from(sorted(current) or [1]), unique=True, max_size=4))
        fresh = data.draw(
            _shared_population(names, catalog, first_id=100 * (step + 1), max_users=4)
        )
        for i in ids:
            current.pop(i, None)
        current.update({u.user_id: u for u in fresh})
        matcher.replace_users(ids, fresh)
        if data.draw(st.booleans(), label="new ownership"):
            ownership = data.draw(_ownership(names, current.values()))
            matcher.set_ownership(ownership)
    reloaded = Matcher.from_snapshots(
        current.values(), catalog=catalog, ownership=ownership, contexts=contexts
    )
    assert matcher.stats() == reloaded.stats()
    assert_same_answers(reloaded, messages, other=matcher)


def test_the_answer_of_a_lone_group_is_a_fresh_list_that_follows_its_members() -> None:
    shared = F("bodhi", [r("app_is", app="bodhi")])
    matcher = Matcher.from_snapshots([snapshot(i, f"u{i}", C("email", [shared])) for i in (3, 1)])
    message = facts(app="bodhi")
    found = matcher.recipients(message)
    assert [x.user for x in found] == ["u1", "u3"]
    found.clear()  # the caller's list: the group's own answer is untouched
    assert [x.user for x in matcher.recipients(message)] == ["u1", "u3"]
    matcher.replace_users([], [snapshot(2, "u2", C("email", [shared]), C("irc", [shared]))])
    assert who(matcher.recipients(message)) == [
        ("u1", "email", "bodhi"),
        ("u2", "email", "bodhi"),
        ("u2", "irc", "bodhi"),
        ("u3", "email", "bodhi"),
    ]
    matcher.replace_users([1], [])
    assert [x.user for x in matcher.recipients(message)] == ["u2", "u2", "u3"]
    assert matcher.recipients(message) == matcher.naive_recipients(message)
