"""Exporting and importing preferences in the public JSON format."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.conftest import database_at
from fmn_core import confirmation
from fmn_core import preferences as prefs
from fmn_core.accounts import LocalDirectory
from fmn_core.db import Database
from fmn_core.errors import ImportRejected
from fmn_core.expiry import expire_preferences
from fmn_core.models import (
    ChangeEvent,
    Confirmation,
    Destination,
    Filter,
    User,
    utcnow,
)
from fmn_core.portability import (
    FORMAT_VERSION,
    ImportSummary,
    export_preferences,
    import_preferences,
    parse_preferences,
)
from fmn_core.preferences import Actor
from fmn_core.store import MAX_SINGLE_LOCKS, lock_account, preference_for_write

ALICE = Actor("alice")
BOB = Actor("bob")


def no_dns(host: str, port: object, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
    raise OSError("no DNS in tests")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Database]:
    """A second, empty database to import into."""
    with database_at(f"sqlite:///{tmp_path / 'fresh.sqlite'}") as db:
        yield db


def confirmed(session: Any, actor: Actor, context: str, address: str) -> None:
    pending = prefs.set_destination(session, actor, context, address)
    if pending.code is not None:
        assert prefs.confirm(session, actor, pending.code).confirmed


def populate(db: Database) -> None:
    """Two users with a bit of everything, made through the preference service."""
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "my builds")
        prefs.add_rule(session, ALICE, "email", "my builds", "app_is", {"app": "koji"})
        prefs.add_rule(session, ALICE, "email", "my builds", "triggered_by_me", {}, negated=True)
        prefs.add_filter(session, ALICE, "email", "errors", oneshot=True)
        prefs.add_rule(session, ALICE, "email", "errors", "severity_at_least", {"level": "error"})
        prefs.set_filter_active(session, ALICE, "email", "errors", False)
        prefs.move_filter(session, ALICE, "email", "errors", 1)
        prefs.set_digest(session, ALICE, "email", 60, 5)
        confirmed(session, ALICE, "email", "alice@example.org")
        confirmed(session, ALICE, "email", "alice.b@example.org")
        confirmed(session, ALICE, "push", "ntfys://93.184.216.34/alice")
        confirmed(session, ALICE, "rss", "")
        # Unconfirmed: must not come out of an export.
        prefs.set_destination(session, ALICE, "irc", "alice_")
        prefs.set_context_enabled(session, ALICE, "irc", False)
        prefs.use_template(session, BOB, "packager", "irc")
        confirmed(session, BOB, "irc", "bob")


def test_export_writes_the_public_format(db: Database) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "my builds")
        prefs.add_rule(session, ALICE, "email", "my builds", "app_is", {"app": "koji"})
        prefs.add_rule(session, ALICE, "email", "my builds", "triggered_by_me", {}, negated=True)
        confirmed(session, ALICE, "email", "alice@example.org")
        prefs.set_destination(session, ALICE, "email", "pending@example.org")
    with db.begin() as session:
        document = export_preferences(session)
    assert document == {
        "version": FORMAT_VERSION,
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "enabled": True,
                        "destinations": ["alice@example.org"],
                        "digest": {"minutes": 0, "count": 0},
                        "filters": [
                            {
                                "name": "my builds",
                                "active": True,
                                "oneshot": False,
                                "rules": [
                                    {"rule": "app_is", "args": {"app": "koji"}},
                                    {"rule": "triggered_by_me", "args": {}, "negated": True},
                                ],
                            }
                        ],
                    }
                },
            }
        ],
    }
    json.dumps(document)  # plain JSON all the way down


def test_export_import_round_trip(db: Database, fresh: Database) -> None:
    populate(db)
    with db.begin() as session:
        exported = export_preferences(session)
    assert [u["name"] for u in exported["users"]] == ["alice", "bob"]
    alice = exported["users"][0]["contexts"]
    assert list(alice) == ["email", "irc", "push", "rss"]
    assert [f["name"] for f in alice["email"]["filters"]] == ["errors", "my builds"]
    assert alice["email"]["destinations"] == ["alice.b@example.org", "alice@example.org"]
    assert alice["irc"] == {
        "enabled": False,
        "destinations": [],
        "digest": {"minutes": 0, "count": 0},
        "filters": [],
    }

    with fresh.begin() as session:
        summary = import_preferences(session, copy.deepcopy(exported), resolver=no_dns)
    # Bob's packager template holds 2 + 3 + 3 + 2 rules; alice has 3.
    assert summary == ImportSummary(users=2, contexts=5, filters=6, rules=13, destinations=5)
    with fresh.begin() as session:
        assert export_preferences(session) == exported
        # Imported destinations are confirmed, with no code left to send.
        assert session.scalar(select(func.count()).select_from(Confirmation)) == 0
        assert all(session.scalars(select(Destination.confirmed)))

    # Importing the same file over the original replaces rows with equal ones
    # (same unique names and addresses) without tripping a constraint.
    with db.begin() as session:
        import_preferences(session, copy.deepcopy(exported), resolver=no_dns)
    with db.begin() as session:
        assert export_preferences(session) == exported


def test_time_bound_rules_and_pauses_survive_a_round_trip(db: Database, fresh: Database) -> None:
    """A restored "mute this package for 30 days" still ends in 30 days, not never."""
    expires = utcnow() + dt.timedelta(days=30)
    resumes = expires + dt.timedelta(days=1)
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "updates")
        prefs.add_rule(session, ALICE, "email", "updates", "app_is", {"app": "bodhi"})
        prefs.add_rule(
            session,
            ALICE,
            "email",
            "updates",
            "package_involved",
            {"package": "kernel"},
            negated=True,
            expires_at=expires,
        )
        prefs.pause_filter(session, ALICE, "email", "updates", resumes)
    with db.begin() as session:
        exported = export_preferences(session)
    (written,) = exported["users"][0]["contexts"]["email"]["filters"]
    assert written["paused_until"] == resumes.isoformat(timespec="seconds")
    assert "expires_at" not in written["rules"][0]
    assert written["rules"][1]["expires_at"] == expires.isoformat(timespec="seconds")
    with fresh.begin() as session:
        import_preferences(session, copy.deepcopy(exported), resolver=no_dns)
    with fresh.begin() as session:
        assert export_preferences(session) == exported
        view = prefs.get_filter(session, ALICE, "email", "updates")
    assert view.paused_until == resumes.replace(microsecond=0)
    assert [r.expires_at for r in view.rules] == [None, expires.replace(microsecond=0)]


def test_a_time_bound_entry_already_past_is_imported_then_ended_with_a_notice(
    db: Database,
) -> None:
    past = "2026-01-01T09:00:00+01:00"
    rules = [
        {"rule": "app_is", "args": {"app": "bodhi"}},
        {
            "rule": "package_involved",
            "args": {"package": "kernel"},
            "negated": True,
            "expires_at": past,
        },
    ]
    filters = [{"name": "updates", "paused_until": past, "rules": rules}]
    document = {"users": [{"name": "alice", "contexts": {"email": {"filters": filters}}}]}
    with db.begin() as session:
        import_preferences(session, document, resolver=no_dns)
    with db.begin() as session:
        view = prefs.get_filter(session, ALICE, "email", "updates")
        assert view.paused_until == dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)
        assert expire_preferences(session) == 2
    with db.begin() as session:
        view = prefs.get_filter(session, ALICE, "email", "updates")
        assert view.paused_until is None and [r.name for r in view.rules] == ["app_is"]
        assert len(prefs.take_notices(session, ALICE)) == 2


#: Stands for a time 400 days from when the test runs.
IN_400_DAYS = "in 400 days"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2027-01-06T16:45:13", "with its UTC offset"),
        ("yesterday", "with its UTC offset"),
        (1767225600, "with its UTC offset"),
        ("9999-12-31T23:59:59-05:00", "not a time fmn can store"),
        (IN_400_DAYS, "within a year from now"),
    ],
)
def test_import_refuses_a_time_it_cannot_take_with_its_path(
    db: Database, value: Any, problem: str
) -> None:
    if value == IN_400_DAYS:
        value = (utcnow() + dt.timedelta(days=400)).isoformat()
    rules = [{"rule": "app_is", "args": {"app": "bodhi"}, "expires_at": value}]
    filters = [{"name": "updates", "paused_until": value, "rules": rules}]
    document = {"users": [{"name": "alice", "contexts": {"email": {"filters": filters}}}]}
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document, resolver=no_dns)
    where = "users[0].contexts.email.filters[0]"
    problems = dict(caught.value.problems)
    assert problem in problems[f"{where}.paused_until"]
    assert problem in problems[f"{where}.rules[0].expires_at"]
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Filter)) == 0


def test_export_is_deterministic(db: Database) -> None:
    populate(db)
    with db.begin() as session:
        first = json.dumps(export_preferences(session))
    with db.begin() as session:
        assert json.dumps(export_preferences(session)) == first


def test_import_replaces_only_the_contexts_given(db: Database) -> None:
    populate(db)
    document = {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "filters": [{"name": "new", "rules": [{"rule": "pertains_to_me"}]}],
                    }
                },
            }
        ]
    }
    with db.begin() as session:
        before = export_preferences(session)
        events = session.scalar(select(func.count()).select_from(ChangeEvent))
        summary = import_preferences(session, document)
    assert summary == ImportSummary(users=1, contexts=1, filters=1, rules=1, destinations=0)
    with db.begin() as session:
        after = export_preferences(session)
        kinds = list(session.scalars(select(ChangeEvent.kind).order_by(ChangeEvent.id)))
    alice_before = before["users"][0]["contexts"]
    alice_after = after["users"][0]["contexts"]
    assert alice_after["email"] == {
        "enabled": True,
        "destinations": [],
        "digest": {"minutes": 0, "count": 0},
        "filters": [
            {
                "name": "new",
                "active": True,
                "oneshot": False,
                "rules": [{"rule": "pertains_to_me", "args": {}}],
            }
        ],
    }
    for context in ("irc", "push", "rss"):
        assert alice_after[context] == alice_before[context]
    assert after["users"][1] == before["users"][1]
    assert len(kinds) == events + 1 and kinds[-1] == "import"


def test_import_creates_users_and_takes_destinations_as_confirmed(db: Database) -> None:
    document = {
        "users": [
            {
                "name": "carol",
                "contexts": {
                    "email": {"destinations": [" Carol@Example.org "]},
                    "irc": {"destinations": ["carol"], "enabled": False},
                },
            },
            {"name": "dave"},
        ]
    }
    with db.begin() as session:
        import_preferences(session, document)
    with db.begin() as session:
        contexts = {c.context: c for c in prefs.list_contexts(session, Actor("carol"))}
        assert [(d.address, d.confirmed) for d in contexts["email"].destinations] == [
            ("Carol@example.org", True)
        ]
        assert contexts["irc"].enabled is False
        names = set(session.scalars(select(User.name)))
    assert names == {"carol", "dave"}


BAD_DOCUMENT: dict[str, Any] = {
    "users": [
        {
            "name": "alice",
            "contexts": {
                "email": {
                    "enabled": "yes",
                    "destinations": [
                        "Alice <alice@example.org>",
                        "alice@example.org",
                        "alice@example.org",
                        5,
                    ],
                    "digest": {"minutes": -1, "count": "3", "hours": 1},
                    "filters": [
                        {"name": "good", "rules": [{"rule": "app_is", "args": {"app": "koji"}}]},
                        {
                            "name": "bad",
                            "rules": [
                                {"rule": "app_is", "args": {"app": "two\nlines"}},
                                {"rule": "no_such_rule", "args": {}},
                            ],
                        },
                        {"name": "GOOD", "rules": []},
                    ],
                    "colour": "red",
                },
                "push": {"destinations": ["ntfys://10.0.0.1/topic", "http://example.org/"]},
                "fax": {},
            },
        },
        {"name": "Not Valid", "contexts": []},
        {"name": "alice"},
        "bob",
    ],
    "version": "2",
    "colour": "red",
}

EXPECTED_PATHS = [
    "(top).colour",
    "version",
    "users[0].contexts.email.colour",
    "users[0].contexts.email.enabled",
    "users[0].contexts.email.digest.hours",
    "users[0].contexts.email.digest.minutes",
    "users[0].contexts.email.digest.count",
    "users[0].contexts.email.destinations[0]",
    "users[0].contexts.email.destinations[2]",
    "users[0].contexts.email.destinations[3]",
    "users[0].contexts.email.filters[1].rules[0].args.app",
    "users[0].contexts.email.filters[1].rules[1].rule",
    "users[0].contexts.email.filters[2].name",
    "users[0].contexts.fax",
    "users[0].contexts.push.destinations[0]",
    "users[0].contexts.push.destinations[1]",
    "users[1].name",
    "users[1].contexts",
    "users[2].name",
    "users[3]",
]


def test_import_rejects_every_invalid_entry_with_its_path(db: Database) -> None:
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, BAD_DOCUMENT, resolver=no_dns)
    problems = dict(caught.value.problems)
    assert [path for path, _ in caught.value.problems] == EXPECTED_PATHS
    assert "control characters" in problems["users[0].contexts.email.filters[1].rules[0].args.app"]
    assert "no_such_rule" in problems["users[0].contexts.email.filters[1].rules[1].rule"]
    assert "private address" in problems["users[0].contexts.push.destinations[0]"]
    assert "scheme 'http'" in problems["users[0].contexts.push.destinations[1]"]
    assert "listed twice" in problems["users[0].contexts.email.destinations[2]"]
    assert "already users[0]" in problems["users[2].name"]
    message = str(caught.value)
    assert message.startswith(f"Nothing was imported: {len(EXPECTED_PATHS)} invalid entries (")
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
        assert session.scalar(select(func.count()).select_from(Filter)) == 0


def test_import_rejects_before_writing_even_if_only_the_last_entry_is_bad(db: Database) -> None:
    populate(db)
    with db.begin() as session:
        before = export_preferences(session)
    document = copy.deepcopy(before)
    document["users"][0]["contexts"]["email"]["filters"] = []
    document["users"][1]["contexts"]["irc"]["filters"][0]["rules"][0]["args"] = {"x": 1}
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document, resolver=no_dns)
    assert [p for p, _ in caught.value.problems] == [
        "users[1].contexts.irc.filters[0].rules[0].args.x"
    ]
    with db.begin() as session:
        assert export_preferences(session) == before


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], "(top)"),
        ({}, "users"),
        ({"users": {"alice": {}}}, "users"),
    ],
)
def test_import_rejects_documents_of_the_wrong_shape(
    db: Database, document: Any, path: str
) -> None:
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document)
    assert caught.value.problems[0][0] == path


# --- feed tokens and hostile files -------------------------------------------------

TOKEN = "T" * 32


def feed_document(*users: tuple[str, str, str]) -> dict[str, Any]:
    """Users with one feed destination each: (name, context, token)."""
    return {
        "users": [
            {"name": name, "contexts": {context: {"destinations": [token]}}}
            for name, context, token in users
        ]
    }


def feed_tokens(db: Database) -> dict[tuple[str, str], list[str]]:
    with db.begin() as session:
        return {
            (v.context, a): list(addresses)
            for a in ("alice", "bob")
            for v in prefs.list_contexts(session, Actor(a))
            if (addresses := [d.address for d in v.destinations])
        }


def test_import_duplicate_feed_token_in_one_file_refused(db: Database) -> None:
    document = feed_document(("alice", "rss", TOKEN), ("bob", "rss", TOKEN))
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document)
    ((path, why),) = caught.value.problems
    assert path == "users[1].contexts.rss.destinations[0]"
    assert "also given to user 'alice' (rss)" in why and TOKEN not in why
    assert feed_tokens(db) == {}


def test_import_duplicate_feed_token_held_by_another_user_refused(db: Database) -> None:
    with db.begin() as session:
        import_preferences(session, feed_document(("alice", "live", TOKEN)))
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, feed_document(("bob", "rss", TOKEN)))
    ((path, why),) = caught.value.problems
    assert path == "users[0].contexts.rss.destinations[0]"
    assert "already belongs to user 'alice' (live)" in why
    assert "set a new feed for this user after the import" in why
    assert feed_tokens(db) == {("live", "alice"): [TOKEN]}


def test_import_feed_token_freed_by_the_same_import_may_move(db: Database) -> None:
    """alice's feed is replaced by the file, so her old token may go to bob."""
    with db.begin() as session:
        import_preferences(session, feed_document(("alice", "rss", TOKEN)))
    other = "U" * 32
    document = feed_document(("bob", "rss", TOKEN), ("alice", "rss", other))
    with db.begin() as session:
        import_preferences(session, document)
    assert feed_tokens(db) == {("rss", "bob"): [TOKEN], ("rss", "alice"): [other]}
    # Importing the same file again changes nothing and is allowed.
    with db.begin() as session:
        import_preferences(session, document)


def test_set_destination_feed_tokens_are_unique_and_stored_as_feed_tokens(db: Database) -> None:
    with db.begin() as session:
        tokens = [
            prefs.set_destination(session, Actor(f"u{n}"), "live", None).destination.address
            for n in range(20)
        ]
    assert len(set(tokens)) == 20
    with db.begin() as session:
        stored = {
            row.address: row.feed_token
            for row in session.execute(select(Destination.address, Destination.feed_token))
        }
    assert all(stored[t] == t for t in tokens)


def test_feed_token_unique_constraint_in_the_database(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    with db.begin() as session:
        import_preferences(session, feed_document(("alice", "rss", TOKEN)))
    with pytest.raises(IntegrityError), db.begin() as session:
        bob = User(name="bob", confirm_failures=0)
        preference = preference_for_write(session, bob, "rss")
        session.add(
            Destination(preference=preference, address=TOKEN, feed_token=TOKEN, confirmed=True)
        )
        session.flush()


def nested(depth: int) -> str:
    return (
        '{"users": [{"name": "alice", "contexts": {"email": {"filters": [{"name": "x", '
        '"rules": [{"rule": "app_is", "args": {"app": ' + "[" * depth + "]" * depth + "}}]}]}}}]}"
    )


# Each file is made when its test runs, and named: pytest would otherwise name a case
# by its whole value and file the 65 MB one under that name (a 65 MB test id, and
# the file held for the whole session).
@pytest.mark.parametrize(
    ("make", "said"),
    [
        pytest.param(
            lambda: nested(10_000),
            "nests arrays and objects 10010 levels deep; at most 32",
            id="nested-10000",
        ),
        pytest.param(lambda: nested(990), "levels deep; at most 32", id="nested-990"),
        pytest.param(lambda: "[" * 100_000, "levels deep", id="bare-brackets-100000"),
        pytest.param(
            lambda: b'{"users": []}' + b" " * (65 * 1024 * 1024),
            "bytes long; at most",
            id="65-MB",
        ),
        pytest.param(
            lambda: '{"users": [{"name": "alice", "x": NaN}]}',
            "NaN is not a number JSON allows",
            id="NaN",
        ),
        pytest.param(lambda: '{"users": [], "users": []}', "appears twice", id="duplicate-key"),
        pytest.param(lambda: b'{"users": ["\xff"]}', "not UTF-8", id="not-utf8"),
        pytest.param(lambda: '{"users": [', "not valid JSON at line 1 column 12", id="truncated"),
        pytest.param(
            lambda: '{"users": [' + "1" * 5000 + "]}", "not valid JSON", id="5000-digit-number"
        ),
    ],
)
def test_import_nested_or_hostile_file_refused_with_a_clear_message(
    db: Database, make: Callable[[], str | bytes], said: str
) -> None:
    with pytest.raises(ImportRejected) as caught:
        parse_preferences(make())
    ((path, why),) = caught.value.problems
    assert path == "(file)" and said in why, why
    assert str(caught.value).startswith("Nothing was imported: 1 invalid entries ((file): ")
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("value", "path", "said"),
    [
        (float("nan"), "users[0].contexts.email.filters[0].rules[0].args.app", ""),
        (float("inf"), "users[0].contexts.email.filters[0].rules[0].args.app", ""),
        ("ko\x00ji", "users[0].contexts.email.filters[0].rules[0].args.app", "control characters"),
        ("\ud800", "users[0].contexts.email.filters[0].rules[0].args.app", ""),
        ("\x1b[31m", "users[0].contexts.email.filters[0].rules[0].args.app", "control"),
    ],
)
def test_import_hostile_values_refused_with_their_path(
    db: Database, value: Any, path: str, said: str
) -> None:
    document = {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "filters": [
                            {"name": "f", "rules": [{"rule": "app_is", "args": {"app": value}}]}
                        ]
                    }
                },
            }
        ]
    }
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document)
    problems = dict(caught.value.problems)
    assert path in problems and said in problems[path], caught.value.problems
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


def test_import_python_data_nested_too_deep_refused_without_recursing(db: Database) -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    document = {"users": [{"name": "alice", "contexts": {"email": {"filters": deep}}}]}
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        import_preferences(session, document)
    assert "nests deeper than 32 levels" in str(caught.value)


def test_set_destination_feed_token_generation_retries_on_a_clash(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.begin() as session:
        import_preferences(session, feed_document(("alice", "rss", TOKEN)))
    fresh = "F" * 32
    drawn = iter([TOKEN, TOKEN, fresh])
    monkeypatch.setattr(confirmation, "new_feed_token", lambda: next(drawn))
    with db.begin() as session:
        view = prefs.set_destination(session, BOB, "live", None).destination
    assert view.address == fresh
    monkeypatch.setattr(confirmation, "new_feed_token", lambda: TOKEN)
    with pytest.raises(RuntimeError, match="no unused feed token"), db.begin() as session:
        prefs.set_destination(session, BOB, "rss", None)


def test_import_refuses_accounts_the_directory_does_not_know_before_writing(
    db: Database,
) -> None:
    """Accounts deleted since the export are all named, with their paths, up front."""
    with db.begin() as session:
        import_preferences(session, {"users": [{"name": "alice"}]})
    document = {
        "users": [
            {"name": "alice", "contexts": {"email": {"enabled": False}}},
            {"name": "gone"},
            {"name": "left"},
        ]
    }
    with pytest.raises(ImportRejected) as caught, db.begin() as session:
        session.info["directory"] = LocalDirectory(session, accept_any=False)
        import_preferences(session, document)
    assert [path for path, _ in caught.value.problems] == ["users[1].name", "users[2].name"]
    assert "no Fedora account named 'gone'" in caught.value.problems[0][1]
    with db.begin() as session:
        assert list(session.scalars(select(User.name))) == ["alice"]


def test_a_site_import_locks_every_account_with_one_lock(db: Database) -> None:
    """PostgreSQL keeps about 64 locks a connection until the commit: a site's file of
    7,000 accounts, locked one by one, ran out of its shared memory and failed. Above
    ``MAX_SINGLE_LOCKS`` accounts an import holds one lock, which every writer of
    one account waits for."""
    count = MAX_SINGLE_LOCKS + 50
    document = {"users": [{"name": f"user{n:05d}"} for n in range(count)]}
    with db.begin() as session:
        summary = import_preferences(session, document)
        if session.get_bind().dialect.name == "postgresql":
            held = session.execute(
                text(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
            ).scalar_one()
            assert held == 1
            # Another connection's writer of one account waits for it (here: is refused).
            with db.engine.connect() as other:
                other.execute(text("SET lock_timeout = '100ms'"))
                with (
                    pytest.raises(OperationalError, match="lock timeout"),
                    Session(other) as writer,
                    writer.begin(),
                ):
                    lock_account(writer, "user00001")
    assert summary.users == count
    with db.begin() as session:
        assert session.scalars(select(func.count()).select_from(User)).one() == count
