"""``explain`` against the matcher and the outbox, over the corpus and a population of users.

The population is written through the preference service and the corpus goes
through the daemon's own ingest and email delivery (a real SMTP server), so the
outbox rows are the ones production would make. For every (user, message) pair
tried, each filter's ``matched`` must be what a matcher holding only that
filter says, each rule's ``holds`` what the catalog rule itself answers (up to
the first rule that does not hold), and a notification is explained exactly
when an outbox row exists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.conftest import SmtpServer
from daemon.test_delivery import make_config
from fmn_core import preferences
from fmn_core.config import Config
from fmn_core.db import Database, catalog_of
from fmn_core.errors import InvalidArgument, NotFound, PermissionDenied
from fmn_core.explain import OUTCOMES, Explanation, explain, message_id_of
from fmn_core.matcher import Matcher
from fmn_core.messages import MessageFacts, facts_of, parse_line
from fmn_core.models import Destination, Notification, PackageOwner, Preference, User
from fmn_core.ownership import OwnershipCache
from fmn_core.preferences import Actor
from fmn_core.rules import RuleContext
from fmn_core.schema import upgrade
from fmn_core.snapshots import ContextSnapshot, UserSnapshot, load_snapshots
from fmn_core.wording import explanation_lines
from fmn_daemon.cli import main
from fmn_daemon.delivery import Senders
from fmn_daemon.ingest import ingest_batch
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

ROW_OUTCOMES = {"notified", "muted", "held", "no-destination", "dead", "context-off"}


def corpus_facts_of(corpus: list[str]) -> list[MessageFacts]:
    found = []
    for line in corpus:
        try:
            found.append(facts_of(parse_line(line)))
        except Exception:
            continue
    return found


def confirm_email(session: Any, name: str, address: str) -> None:
    """A confirmed email address (the confirmation flow has its own tests)."""
    user = session.scalars(select(User).where(User.name == name)).one()
    preference = session.scalars(
        select(Preference).where(Preference.user_id == user.id, Preference.context == "email")
    ).one()
    session.add(Destination(preference=preference, address=address, confirmed=True))
    session.flush()


def build_population(db: Database) -> None:
    """Users whose filters cover positive and negated rules, inactive filters, a context
    turned off, a muted user and a digest."""
    P = preferences
    with db.begin() as s:
        ana = Actor("ana")
        P.add_filter(s, ana, "email", "updates")
        P.add_rule(s, ana, "email", "updates", "app_is", {"app": "bodhi"})
        P.add_rule(
            s, ana, "email", "updates", "package_involved", {"package": "tzdata"}, negated=True
        )
        P.add_filter(s, ana, "email", "sources")
        P.add_rule(s, ana, "email", "sources", "app_is", {"app": "pagure"})
        P.add_filter(s, ana, "email", "composes (off)")
        P.add_rule(s, ana, "email", "composes (off)", "app_is", {"app": "compose"})
        P.set_filter_active(s, ana, "email", "composes (off)", False)
        P.add_filter(s, ana, "irc", "releases")
        P.add_rule(s, ana, "irc", "releases", "app_is", {"app": "anitya"})
        P.set_context_enabled(s, ana, "irc", False)
        confirm_email(s, "ana", "ana@example.org")

        ben = Actor("ben")  # muted: rows are made, and held
        P.add_filter(s, ben, "email", "releases")
        P.add_rule(s, ben, "email", "releases", "app_is", {"app": "anitya"})
        P.mute(s, ben, dt.timedelta(days=2))
        confirm_email(s, "ben", "ben@example.org")

        cy = Actor("cy")  # a digest: rows wait for it
        P.add_filter(s, cy, "email", "composes")
        P.add_rule(s, cy, "email", "composes", "app_is", {"app": "compose"})
        P.add_rule(s, cy, "email", "composes", "severity_at_least", {"level": "info"})
        P.set_digest(s, cy, "email", 600)
        confirm_email(s, "cy", "cy@example.org")

        dee = Actor("dee")  # no confirmed address
        P.add_filter(s, dee, "email", "everything but bodhi")
        P.add_rule(s, dee, "email", "everything but bodhi", "topic_matches", {"pattern": "*"})
        P.add_rule(
            s, dee, "email", "everything but bodhi", "app_is", {"app": "bodhi"}, negated=True
        )


def ingest_and_deliver(db: Database, smtp_server: SmtpServer, messages: list[MessageFacts]) -> None:
    with db.begin() as session:
        matcher = Matcher.load(session)
        ingest_batch(session, matcher, messages)
    asyncio.run(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()).drain(20))


def oracle_matched(
    session: Any,
    snapshot: UserSnapshot,
    context: str,
    filter_id: int,
    facts: MessageFacts,
    ownership: OwnershipCache,
) -> bool:
    """A matcher holding only this filter (as if its context were on): does it match?"""
    found = [(c, f) for c in snapshot.contexts for f in c.filters if f.filter_id == filter_id]
    ((_, filter_),) = found
    if not filter_.active:
        return False
    alone = UserSnapshot(snapshot.user_id, snapshot.name, (ContextSnapshot(context, (filter_,)),))
    matcher = Matcher.from_snapshots([alone], catalog_of(session), ownership, (context,))
    return bool(matcher.recipients(facts))


def check_agreement(
    session: Any,
    explanation: Explanation,
    snapshot: UserSnapshot,
    facts: MessageFacts,
    ownership: OwnershipCache,
) -> None:
    """Each filter's and rule's verdict in ``explanation`` is what the daemon's
    matcher (over the whole ``ownership`` table, as the consumer loads it) and the
    rule itself say."""
    catalog = catalog_of(session)
    rule_context = RuleContext(snapshot.name, ownership)
    enabled = {c.context: c.enabled for c in snapshot.contexts}
    by_context = {c.context: c for c in explanation.contexts}
    for context_snapshot in snapshot.contexts:
        explained = by_context[context_snapshot.context]
        assert [f.name for f in explained.filters] == [f.name for f in context_snapshot.filters]
        for shown, stored in zip(explained.filters, context_snapshot.filters, strict=True):
            expected = enabled[context_snapshot.context] and oracle_matched(
                session, snapshot, context_snapshot.context, stored.filter_id, facts, ownership
            )
            assert shown.matched == expected, (explanation.message_id, shown)
            assert shown.active == stored.active
            if shown.skipped:
                assert all(r.holds is None for r in shown.rules)
                continue
            failed = False
            for rule, stored_rule in zip(shown.rules, stored.rules, strict=True):
                assert (rule.rule, dict(rule.args), rule.negated) == (
                    stored_rule.name,
                    dict(stored_rule.arguments),
                    stored_rule.negated,
                )
                if failed:
                    assert rule.holds is None
                    continue
                spec = catalog.get(stored_rule.name)
                value = bool(spec(facts, rule_context, spec.validate(stored_rule.arguments)))
                assert rule.holds == (value != stored_rule.negated), (facts.id, rule)
                failed = not rule.holds
            assert shown.matched == all(r.holds for r in shown.rules)


@pytest.mark.usefixtures("smtp_server")
def test_explain_agrees_with_the_matcher_and_the_outbox(
    db: Database, smtp_server: SmtpServer, corpus: list[str]
) -> None:
    build_population(db)
    messages = corpus_facts_of(corpus)
    ingest_and_deliver(db, smtp_server, messages)
    with db.begin() as session:
        rows = {
            (n.user_id, n.message_id, n.context): n for n in session.scalars(select(Notification))
        }
        snapshots = {s.name: s for s in load_snapshots(session)}
        ownership = OwnershipCache.load(session)
    assert rows, "the population must get some notifications"
    seen_outcomes: set[str] = set()
    negated_failures = 0
    for name in ("ana", "ben", "cy", "dee"):
        snapshot = snapshots[name]
        got = {m for (u, m, _c) in rows if u == snapshot.user_id}
        # Every message this user has a row for, and a sample of the rest.
        tried = [f for i, f in enumerate(messages) if f.id in got or i % 7 == 0]
        with db.begin() as session:
            for facts in tried:
                explanation = explain(session, Actor(name), facts.id)
                assert explanation.message_id == facts.id
                check_agreement(session, explanation, snapshot, facts, ownership)
                for item in explanation.contexts:
                    assert item.outcome in OUTCOMES
                    row = rows.get((snapshot.user_id, facts.id, item.context))
                    assert (item.filter is not None) == (row is not None), (facts.id, item)
                    if row is not None:
                        assert item.outcome in ROW_OUTCOMES
                        assert item.filter == row.filter_name and item.state == row.state
                        matched = [f.name for f in item.filters if f.matched]
                        assert matched and matched[0] == row.filter_name
                    else:
                        assert item.outcome in {"no-match", "context-off", "unknown-schema"}
                        if item.outcome != "context-off":
                            assert not any(f.matched for f in item.filters)
                    seen_outcomes.add(item.outcome)
                    negated_failures += sum(
                        1 for f in item.filters for r in f.rules if r.negated and r.holds is False
                    )
    # The population covers what the issue asks for.
    assert {"notified", "muted", "held", "no-destination", "no-match", "context-off"} <= (
        seen_outcomes
    )
    assert negated_failures > 0


def test_explain_reads_package_ownership_as_the_daemon_does(
    db: Database, corpus: list[str]
) -> None:
    """``explain`` asks the table about the owners and packages it needs
    (``OwnershipQueries``); its verdicts equal the daemon's, which loads the whole
    table, and the rows the daemon wrote."""
    messages = corpus_facts_of(corpus)
    packaged = [f for f in messages if f.packages]
    packages = sorted({p for f in packaged for p in f.packages})
    assert len(packages) > 30, "the corpus must name packages"
    P = preferences
    with db.begin() as s:
        s.add_all(
            [PackageOwner(namespace="rpms", package=p, owner="olga") for p in packages[::2]]
            + [PackageOwner(namespace="rpms", package=p, owner="@maint") for p in packages[::3]]
            # Another namespace's owners do not count for a message's (rpm) packages.
            + [PackageOwner(namespace="modules", package=p, owner="olga") for p in packages[1::2]]
        )
        olga = Actor("olga")
        P.add_filter(s, olga, "email", "mine")
        P.add_rule(s, olga, "email", "mine", "package_owned_by_me", {})
        P.add_filter(s, olga, "email", "the group's")
        P.add_rule(s, olga, "email", "the group's", "package_owned_by_group", {"group": "maint"})
        pete = Actor("pete")
        P.add_filter(s, pete, "email", "all but olga's")
        P.add_rule(s, pete, "email", "all but olga's", "topic_matches", {"pattern": "*"})
        P.add_rule(
            s,
            pete,
            "email",
            "all but olga's",
            "package_owned_by",
            {"username": "olga"},
            negated=True,
        )
    with db.begin() as session:
        ownership = OwnershipCache.load(session)
        ingest_batch(session, Matcher.load(session, ownership=ownership), messages)
    with db.begin() as session:
        rows = {
            (n.user_id, n.message_id): n.filter_name for n in session.scalars(select(Notification))
        }
        snapshots = {s.name: s for s in load_snapshots(session)}
    tried = packaged[:150] + [f for f in messages if not f.packages][:20]
    matched: dict[str, int] = {}
    for name in ("olga", "pete"):
        snapshot = snapshots[name]
        with db.begin() as session:
            for facts in tried:
                explanation = explain(session, Actor(name), facts.id)
                check_agreement(session, explanation, snapshot, facts, ownership)
                (email,) = [c for c in explanation.contexts if c.context == "email"]
                assert email.filter == rows.get((snapshot.user_id, facts.id)), (name, facts.id)
                for filter_ in email.filters:
                    key = f"{name}: {filter_.name} {'matched' if filter_.matched else 'not'}"
                    matched[key] = matched.get(key, 0) + 1
    # Each owner rule both held and failed on some message.
    for name, filter_name in (
        ("olga", "mine"),
        ("olga", "the group's"),
        ("pete", "all but olga's"),
    ):
        assert matched.get(f"{name}: {filter_name} matched", 0) > 0, (name, filter_name, matched)
        assert matched.get(f"{name}: {filter_name} not", 0) > 0, (name, filter_name, matched)


def test_explain_words_for_a_message_that_reached_the_user_and_one_that_did_not(
    db: Database, smtp_server: SmtpServer, corpus: list[str]
) -> None:
    build_population(db)
    messages = corpus_facts_of(corpus)
    ingest_and_deliver(db, smtp_server, messages)
    with db.begin() as session:
        got = session.scalars(
            select(Notification.message_id)
            .join(User, User.id == Notification.user_id)
            .where(User.name == "ana", Notification.state == "sent")
        ).first()
        assert got is not None
        bodhi_pkg = next(f for f in messages if f.app_name == "bodhi" and "tzdata" in f.packages)
        sent = explain(session, Actor("ana"), got)
        missed = explain(session, Actor("ana"), bodhi_pkg.id)
    email = {c.context: c for c in sent.contexts}["email"]
    assert email.outcome == "notified" and email.state == "sent"
    lines = explanation_lines(sent)
    assert any(
        (line.startswith("email: notified by filter") and "a***@example.org" in line)
        or line.startswith("email: notified by filter")
        for line in lines
    )
    missed_email = {c.context: c for c in missed.contexts}["email"]
    assert missed_email.outcome == "no-match"
    words = "\n".join(explanation_lines(missed))
    assert (
        "filter 'updates': does not match: rule 2 `not package_involved package=tzdata` "
        "does not hold (packages: " in words
    )
    assert "filter 'composes (off)': not checked, it is switched off." in words
    irc = {c.context: c for c in missed.contexts}["irc"]
    assert irc.outcome == "context-off"


def test_explain_only_the_askers_own_preferences(db: Database, corpus: list[str]) -> None:
    build_population(db)
    messages = corpus_facts_of(corpus)[:3]
    with db.begin() as session:
        ingest_batch(session, Matcher.load(session), messages)
    with db.begin() as session:
        with pytest.raises(PermissionDenied):
            explain(session, Actor("ben"), messages[0].id, user="ana")
        admin = explain(session, Actor("root", is_admin=True), messages[0].id, user="ana")
        assert admin.user == "ana"
        with pytest.raises(NotFound, match="no message"):
            explain(session, Actor("ana"), "not-a-stored-id")
    with pytest.raises(InvalidArgument):
        message_id_of("two words")
    assert message_id_of("https://apps.fedoraproject.org/datagrepper/id?id=abc-1") == "abc-1"
    assert message_id_of(" abc-2 ") == "abc-2"


def test_cli_explain_prints_the_issue_json_shape(
    tmp_path: Path, corpus: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    upgrade(url)
    db = Database(Config(database_url=url))
    try:
        build_population(db)
        messages = corpus_facts_of(corpus)
        with db.begin() as session:
            ingest_batch(session, Matcher.load(session), messages)
        with db.begin() as session:
            bodhi_pkg = next(
                f for f in messages if f.app_name == "bodhi" and "tzdata" in f.packages
            )
            missed = explain(session, Actor("ana"), bodhi_pkg.id)
    finally:
        db.dispose()
    config_file = tmp_path / "fmn.toml"
    config_file.write_text(f'database_url = "{url}"\n')
    link = f"https://apps.fedoraproject.org/datagrepper/v2/id?id={bodhi_pkg.id}&is_raw=true"
    assert main(["--config", str(config_file), "explain", "ana", link, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"user", "message_id", "topic", "contexts"}
    assert data["message_id"] == bodhi_pkg.id
    context = next(c for c in data["contexts"] if c["context"] == "email")
    assert set(context) == {"context", "outcome", "filter", "filters"}
    assert context["outcome"] == "no-match" and context["filter"] is None
    updates = context["filters"][0]
    assert set(updates) == {"name", "active", "matched", "rules"}
    assert updates["rules"][1] == {
        "rule": "package_involved",
        "args": {"package": "tzdata"},
        "negated": True,
        "holds": False,
    }
    assert main(["--config", str(config_file), "explain", "ana", bodhi_pkg.id]) == 0
    assert capsys.readouterr().out.splitlines() == explanation_lines(missed)
    assert main(["--config", str(config_file), "explain", "ana", "no-such-id"]) == 2
    err = capsys.readouterr().err
    assert "fmn has no message 'no-such-id'" in err
    assert "(check the id; messages older than 30 days are pruned)" in err
