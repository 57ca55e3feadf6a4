"""The ingest pipeline on SQLite and PostgreSQL: store once, match, outbox, one-shot filters."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pika
import pytest
from conftest import readable_messages  # tests/conftest.py (tests/ is on sys.path)
from fedora_messaging import message as fm_message
from sqlalchemy import String, func, select, update
from sqlalchemy.orm import Session

from fmn_core.config import Config, IngestConfig
from fmn_core.db import Database
from fmn_core.errors import MalformedMessage
from fmn_core.matcher import Matcher, Recipient
from fmn_core.messages import MessageFacts, facts_of
from fmn_core.models import (
    ChangeEvent,
    Filter,
    Notification,
    Preference,
    Rule,
    StoredMessage,
    User,
    utcnow,
)
from fmn_core.schema import upgrade
from fmn_daemon.ingest import decode_delivery, ingest_batch, json_safe, read_delivery
from fmn_daemon.metrics import Metrics


def add_filter(
    session: Session,
    user: str,
    rules: list[tuple[str, dict[str, str]]],
    *,
    context: str = "email",
    name: str = "f",
    oneshot: bool = False,
    position: int = 0,
) -> Filter:
    """Write a filter straight into the tables (the preference service has its own tests)."""
    account = session.scalar(select(User).where(User.name == user))
    if account is None:
        account = User(name=user)
        session.add(account)
        session.flush()
    preference = session.scalar(
        select(Preference).where(Preference.user_id == account.id, Preference.context == context)
    )
    if preference is None:
        preference = Preference(user_id=account.id, context=context)
        session.add(preference)
        session.flush()
    filter_ = Filter(preference_id=preference.id, name=name, oneshot=oneshot, position=position)
    session.add(filter_)
    session.flush()
    for i, (rule, args) in enumerate(rules):
        session.add(Rule(filter_id=filter_.id, name=rule, arguments=args, position=i))
    session.flush()
    return filter_


def message(
    app: str = "koji", *, ident: str | None = None, body: dict[str, object] | None = None
) -> fm_message.Message:
    msg = fm_message.Message(
        topic=f"org.fedoraproject.test.{app}.thing.happened", body=body or {"n": 1}
    )
    msg.id = ident or str(uuid.uuid4())
    return msg


def load_matcher(db: Database) -> Matcher:
    with db.begin() as session:
        return Matcher.load(session)


def count(db: Database, model: type[object]) -> int:
    with db.begin() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_ingest_stores_message_and_writes_outbox_rows(db: Database) -> None:
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})], name="koji")
        add_filter(session, "alice", [("app_is", {"app": "koji"})], context="rss", name="koji-feed")
        add_filter(session, "bob", [("app_is", {"app": "bodhi"})])
    matcher = load_matcher(db)
    metrics = Metrics()
    koji, bodhi, other = message("koji"), message("bodhi"), message("pagure")

    with db.begin() as session:
        result = ingest_batch(session, matcher, [koji, bodhi, other], metrics)

    assert (result.received, result.stored, result.matched, result.notifications) == (3, 3, 2, 3)
    with db.begin() as session:
        rows = session.execute(
            select(
                Notification.message_id,
                User.name,
                Notification.context,
                Notification.filter_name,
                Notification.state,
            )
            .join(User, User.id == Notification.user_id)
            .order_by(User.name, Notification.context)
        ).all()
        stored = session.get(StoredMessage, koji.id)
        assert stored is not None and stored.topic == koji.topic and stored.body == {"n": 1}
    assert [tuple(r) for r in rows] == [
        (koji.id, "alice", "email", "koji", "pending"),
        (koji.id, "alice", "rss", "koji-feed", "pending"),
        (bodhi.id, "bob", "email", "f", "pending"),
    ]
    assert count(db, StoredMessage) == 3
    snapshot = metrics.snapshot()
    assert snapshot["notifications_created"] == 3
    assert snapshot["messages_matched"] == 2
    assert snapshot["messages_without_schema"] == 3


def test_ingest_redelivery_creates_no_duplicates(db: Database) -> None:
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    matcher = load_matcher(db)
    first, second = message("koji"), message("koji")

    with db.begin() as session:
        one = ingest_batch(session, matcher, [first, first], Metrics())
    # A crash between commit and ack: the broker delivers the same ids again.
    with db.begin() as session:
        two = ingest_batch(session, matcher, [first, second], Metrics())

    assert (one.stored, one.duplicates, one.notifications) == (1, 1, 1)
    assert (two.stored, two.duplicates, two.notifications) == (1, 1, 1)
    assert first.id not in two.recipients
    assert count(db, StoredMessage) == 2
    assert count(db, Notification) == 2


def test_ingest_existing_outbox_row_is_not_duplicated(db: Database) -> None:
    """Even if a message row went missing, the outbox's unique key holds."""
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    matcher = load_matcher(db)
    msg = message("koji")
    with db.begin() as session:
        ingest_batch(session, matcher, [msg])
    with db.begin() as session:
        # Only the message row's body changes; the outbox row stays.
        session.execute(
            update(StoredMessage).where(StoredMessage.id == msg.id).values(topic=msg.topic)
        )
        assert ingest_batch(session, matcher, [msg]).notifications == 0
    assert count(db, Notification) == 1


def test_ingest_oneshot_filter_fires_once_and_is_deactivated(db: Database) -> None:
    with db.begin() as session:
        once = add_filter(
            session, "carol", [("app_is", {"app": "koji"})], name="once", oneshot=True
        )
        add_filter(session, "dave", [("app_is", {"app": "koji"})], name="always")
        once_id = once.id
    matcher = load_matcher(db)
    batch = [message("koji"), message("koji"), message("koji")]

    refreshed: set[int] = set()
    with db.begin() as session:
        result = ingest_batch(session, matcher, batch, Metrics(), refreshed=refreshed)

    assert result.oneshots_fired == [once_id]
    assert [r.user for r in result.recipients[batch[0].id]] == ["carol", "dave"]
    assert [r.user for r in result.recipients[batch[1].id]] == ["dave"]
    with db.begin() as session:
        filter_ = session.get(Filter, once_id)
        assert filter_ is not None and filter_.active is False
        carol = session.scalar(select(User.id).where(User.name == "carol"))
        kinds = session.scalars(select(ChangeEvent.kind).where(ChangeEvent.user_id == carol)).all()
        assert kinds == ["oneshot_fired"]
        carol_rows = session.scalar(
            select(func.count()).select_from(Notification).where(Notification.user_id == carol)
        )
    assert carol_rows == 1
    assert refreshed == {carol}
    # The in-process matcher forgot the filter at once; a later batch doesn't match it.
    with db.begin() as session:
        later = ingest_batch(session, matcher, [message("koji")])
    assert [r.user for rs in later.recipients.values() for r in rs] == ["dave"]


def test_ingest_oneshot_falls_back_to_the_users_next_filter(db: Database) -> None:
    with db.begin() as session:
        add_filter(
            session, "erin", [("app_is", {"app": "koji"})], name="once", oneshot=True, position=0
        )
        add_filter(session, "erin", [("app_is", {"app": "koji"})], name="steady", position=1)
    matcher = load_matcher(db)
    batch = [message("koji"), message("koji")]
    with db.begin() as session:
        result = ingest_batch(session, matcher, batch)
    assert [r.filter_name for r in result.recipients[batch[0].id]] == ["once"]
    assert [r.filter_name for r in result.recipients[batch[1].id]] == ["steady"]
    assert result.notifications == 2


def test_ingest_ignores_filter_switched_off_since_the_matcher_loaded(db: Database) -> None:
    with db.begin() as session:
        stale = add_filter(session, "frank", [("app_is", {"app": "koji"})])
        stale_id = stale.id
    matcher = load_matcher(db)
    with db.begin() as session:  # no change event: the matcher can't know yet
        session.execute(update(Filter).where(Filter.id == stale_id).values(active=False))
    with db.begin() as session:
        result = ingest_batch(session, matcher, [message("koji")])
    assert result.notifications == 0
    assert count(db, Notification) == 0


def test_ingest_stores_messages_and_reads_filter_states_in_one_round_trip(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the messages' insert and the matched filters' state go together, then
    the outbox rows; a redelivery in the batch is matched but gets no rows again."""
    from fmn_core import db as db_module
    from fmn_daemon import ingest as ingest_module

    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
        add_filter(session, "bob", [("app_is", {"app": "bodhi"})])
    matcher = load_matcher(db)
    stored = message("koji")
    with db.begin() as session:
        ingest_batch(session, matcher, [stored])
    sent: list[list[str]] = []
    # The functions the ingest module imported (``fmn_core.db``'s), wrapped where it calls them.
    together, alone = db_module.run_all_on_driver, db_module.run_on_driver

    def all_counted(session: Session, statements: Sequence[tuple[str, Sequence[Any]]]) -> Any:
        sent.append([statement.split()[0] for statement, _ in statements])
        return together(session, statements)

    def one_counted(session: Session, statement: str, params: Sequence[Any] = ()) -> Any:
        sent.append([statement.split()[0]])
        return alone(session, statement, params)

    monkeypatch.setattr(ingest_module, "run_all_on_driver", all_counted)
    monkeypatch.setattr(ingest_module, "run_on_driver", one_counted)
    fresh = [message("koji"), message("bodhi"), message("pagure")]
    with db.begin() as session:
        result = ingest_batch(session, matcher, [stored, fresh[0], *fresh])

    postgres = db.engine.dialect.name == "postgresql"
    assert sent == ([["INSERT", "SELECT"], ["WITH"]] if postgres else [])
    assert (result.stored, result.duplicates, result.matched, result.notifications) == (3, 2, 2, 2)
    assert sorted(result.recipients) == sorted(m.id for m in fresh)
    assert [r.user for r in result.recipients[fresh[0].id]] == ["alice"]
    assert count(db, StoredMessage) == 4
    with db.begin() as session:
        rows = session.execute(
            select(Notification.message_id, User.name).join(User, User.id == Notification.user_id)
        ).all()
    assert sorted(tuple(r) for r in rows) == sorted(
        [(stored.id, "alice"), (fresh[0].id, "alice"), (fresh[1].id, "bob")]
    )


def test_ingest_redelivered_message_does_not_fire_a_oneshot_filter(db: Database) -> None:
    """Only new messages fire one-shot filters: a redelivery gets no outbox rows, so a
    filter switched off for it would have notified nobody."""
    with db.begin() as session:
        add_filter(session, "dave", [("app_is", {"app": "koji"})], name="always")
    matcher = load_matcher(db)
    first = message("koji")
    with db.begin() as session:
        ingest_batch(session, matcher, [first])
    # Made after the first delivery was stored, before the broker delivers it again.
    with db.begin() as session:
        once_id = add_filter(
            session, "carol", [("app_is", {"app": "koji"})], name="once", oneshot=True
        ).id
    matcher = load_matcher(db)

    with db.begin() as session:
        again = ingest_batch(session, matcher, [first])
    assert (again.duplicates, again.notifications, again.oneshots_fired) == (1, 0, [])
    with db.begin() as session:
        assert session.scalar(select(Filter.active).where(Filter.id == once_id)) is True

    later = message("koji")
    with db.begin() as session:
        result = ingest_batch(session, matcher, [first, later])
    assert result.oneshots_fired == [once_id]
    assert sorted(r.user for r in result.recipients[later.id]) == ["carol", "dave"]
    assert first.id not in result.recipients
    assert count(db, Notification) == 3


def test_ingest_muted_user_still_gets_outbox_rows(db: Database) -> None:
    with db.begin() as session:
        add_filter(session, "gina", [("app_is", {"app": "koji"})])
        session.execute(
            update(User).where(User.name == "gina").values(muted_until=utcnow().replace(year=2999))
        )
    matcher = load_matcher(db)
    with db.begin() as session:
        assert ingest_batch(session, matcher, [message("koji")]).notifications == 1


def test_ingest_malformed_messages_are_counted_and_skipped(db: Database) -> None:
    with db.begin() as session:
        add_filter(session, "hank", [("app_is", {"app": "koji"})])
    matcher = load_matcher(db)
    metrics = Metrics()
    too_long = message("koji", ident="x" * 300)
    good = message("koji")
    with db.begin() as session:
        result = ingest_batch(session, matcher, [too_long, good], metrics)
    assert result.stored == 1
    assert [why for _, why in result.malformed] == ["the message id is longer than 255 characters"]
    assert metrics.get("messages_malformed") == 1
    assert count(db, StoredMessage) == 1


def test_ingest_stores_message_with_schema_and_unicode(db: Database, corpus: list[str]) -> None:
    with db.begin() as session:
        add_filter(session, "ivan", [("topic_matches", {"pattern": "*"})])
    matcher = load_matcher(db)
    loaded = readable_messages(corpus)
    with db.begin() as session:
        result = ingest_batch(session, matcher, loaded, Metrics())
    assert result.stored == len({m.id for m in loaded})
    assert result.notifications == result.stored


def test_decode_delivery_reads_amqp_properties() -> None:
    body = json.dumps({"msg": {"hello": "wörld"}}).encode()
    properties = pika.BasicProperties(
        message_id="abc-1",
        content_encoding="utf-8",
        headers={"fedora_messaging_severity": 20, "sent-at": b"2024-01-01", "x": [b"a"]},
    )
    decoded = decode_delivery("org.fedoraproject.prod.koji.x", properties, body)
    assert decoded.id == "abc-1"
    assert decoded.topic == "org.fedoraproject.prod.koji.x"
    assert decoded.body == {"msg": {"hello": "wörld"}}
    assert decoded._headers["sent-at"] == "2024-01-01"


@pytest.mark.parametrize(
    ("properties", "body", "reason"),
    [
        (pika.BasicProperties(message_id="m1"), b"{not json", "not JSON"),
        (pika.BasicProperties(message_id="m2"), b"\xff\xfe", "cannot be decoded"),
        (pika.BasicProperties(), b"{}", "no message_id"),
        (pika.BasicProperties(message_id="m3"), b"[1, 2]", "not a JSON object"),
        (pika.BasicProperties(message_id="m5"), b'{"n": NaN}', "NaN is not a JSON value"),
        (pika.BasicProperties(message_id="m6"), b'{"n": -Infinity}', "Infinity is not a JSON"),
        (pika.BasicProperties(message_id="m7"), b'{"n": 1e999}', "too large a number"),
        (
            pika.BasicProperties(message_id="m8"),
            b'{"n": "' + b"x" * IngestConfig().max_body_bytes + b'"}',
            "ingest.max_body_bytes",
        ),
        (
            pika.BasicProperties(
                message_id="m4", headers={"fedora_messaging_schema": "bodhi.update.comment.v1"}
            ),
            b"{}",
            "does not match its schema",
        ),
    ],
)
def test_decode_delivery_refuses_malformed_bodies(
    properties: pika.BasicProperties, body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_delivery("org.fedoraproject.prod.bodhi.update.comment", properties, body)


def test_json_safe_converts_amqp_header_values() -> None:
    import datetime as dt
    from decimal import Decimal

    value = {
        "b": b"x",
        "d": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        "n": Decimal("1.5"),
        "l": (1, b"y"),
    }
    assert json.loads(json.dumps(json_safe(value))) == {
        "b": "x",
        "d": "2024-01-02T00:00:00+00:00",
        "n": "1.5",
        "l": [1, "y"],
    }


def test_ingest_stores_the_body_as_the_json_text_it_arrived_in(db: Database) -> None:
    """PostgreSQL keeps the received text (not re-encoded); both read back the same body."""
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
    matcher = load_matcher(db)
    text = '{ "b":[1,  2.50, 12345678901234567890],"a" : "w\\u00f6rld ✓", "n":null }'
    properties = pika.BasicProperties(message_id=str(uuid.uuid4()), headers={"x": "y"})
    decoded, body_json = read_delivery(
        "org.fedoraproject.test.koji.build", properties, text.encode()
    )
    assert body_json == text
    with db.begin() as session:
        result = ingest_batch(session, matcher, [facts_of(decoded, body_json=body_json)])
    assert (result.stored, result.notifications) == (1, 1)
    with db.begin() as session:
        stored = session.get(StoredMessage, decoded.id)
        assert stored is not None and stored.body == json.loads(text)
        assert stored.headers == {"x": "y"}
        if session.get_bind().dialect.name == "postgresql":
            raw = session.scalar(
                select(func.cast(StoredMessage.body, String)).where(StoredMessage.id == decoded.id)
            )
            assert raw == text


@pytest.mark.parametrize(
    "headers",
    [
        {"x": "w\u00f6rld ✓", "n": 7, "t": True, "none": None, "q": 'a"b\\c\x01'},
        {"big": 2**70, "x": "y"},  # beyond 64 bits: orjson refuses, json writes it
        {"f": 1.5, "nested": {"a": [1, "b"]}},  # not a flat table of plain values
    ],
)
def test_ingest_stores_the_headers_it_was_given(db: Database, headers: dict[str, object]) -> None:
    """Headers are written by orjson or, for what it refuses, by json: read back the same."""
    matcher = load_matcher(db)
    properties = pika.BasicProperties(message_id=str(uuid.uuid4()), headers=headers)
    decoded, body_json = read_delivery("org.fedoraproject.test.koji.build", properties, b"{}")
    with db.begin() as session:
        result = ingest_batch(session, matcher, [facts_of(decoded, body_json=body_json)])
    assert result.stored == 1
    with db.begin() as session:
        stored = session.get(StoredMessage, decoded.id)
        assert stored is not None and stored.headers == headers


def test_ingest_writes_each_outbox_row_with_the_batch_constants(db: Database) -> None:
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})])
        add_filter(session, "bob", [("app_is", {"app": "koji"})], context="rss")
    matcher = load_matcher(db)
    batch = [message("koji"), message("koji"), message("bodhi")]
    with db.begin() as session:
        assert ingest_batch(session, matcher, batch).notifications == 4
    with db.begin() as session:
        rows = session.scalars(select(Notification)).all()
    assert sorted((r.message_id, r.context) for r in rows) == sorted(
        (m.id, c) for m in batch[:2] for c in ("email", "rss")
    )
    assert {(r.state, r.attempts) for r in rows} == {("pending", 0)}
    assert len({(r.created_at, r.next_attempt_at) for r in rows}) == 1
    assert all(r.created_at == r.next_attempt_at for r in rows)


def test_ingest_writes_one_outbox_row_per_user_and_context_even_if_named_twice(
    db: Database,
) -> None:
    """The outbox rows go in without ``ON CONFLICT``: a recipient named twice is kept once."""
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})], name="first")
        add_filter(session, "alice", [("app_is", {"app": "koji"})], name="second", position=1)
    matcher = load_matcher(db)
    answer = matcher.recipients(facts_of(message("koji")))
    assert [r.filter_name for r in answer] == ["first"]

    class Repeating(Matcher):
        def recipients(self, facts: MessageFacts) -> list[Recipient]:
            first = super().recipients(facts)
            return first + [r._replace(filter_name="second") for r in first]

    matcher.__class__ = Repeating
    batch = [message("koji"), message("koji")]
    with db.begin() as session:
        result = ingest_batch(session, matcher, batch)
    assert result.notifications == 2
    assert [[r.filter_name for r in rs] for rs in result.recipients.values()] == [
        ["first"],
        ["first"],
    ]
    with db.begin() as session:
        rows = session.execute(select(Notification.message_id, Notification.filter_name)).all()
    assert sorted(tuple(r) for r in rows) == sorted((m.id, "first") for m in batch)


def test_json_safe_copies_a_flat_table_as_before() -> None:
    for value in (
        {"a": "x", "n": 1, "f": 1.5, "t": True, "none": None},
        {b"raw": "x", 1: 2, "s": "y"},  # keys that are not strings are made strings
        {},
    ):
        copied = json_safe(value)
        assert copied is not value
        assert list(copied.items()) == [(str(k), v) for k, v in value.items()]
        assert all(type(k) is str for k in copied)


@pytest.mark.postgres
def test_ingest_announces_its_outbox_rows_as_announce_new_rows_does(
    empty_postgres_url: str,
) -> None:
    # The batch's NOTIFY rides in the outbox insert's statement: listening senders
    # must hear, at the commit and only then, what ``announce_new_rows`` sends.
    import psycopg

    from fmn_core import outbox
    from fmn_core.config import Config
    from fmn_core.db import make_engine
    from fmn_core.models import Base

    engine = make_engine(empty_postgres_url)
    listener = psycopg.connect(
        empty_postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    try:
        Base.metadata.create_all(engine)
        database = Database(Config(database_url=str(engine.url)), engine)
        listener.execute(f"LISTEN {outbox.NEW_ROWS_CHANNEL}")

        def heard() -> list[tuple[str, str]]:
            return [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=5)]

        with database.begin() as session:
            add_filter(session, "alice", [("app_is", {"app": "koji"})])
        matcher = load_matcher(database)
        with database.begin() as session:
            outbox.announce_new_rows(session)
        announced = heard()
        assert announced == [(outbox.NEW_ROWS_CHANNEL, "")]

        with database.begin() as session:
            result = ingest_batch(session, matcher, [message("koji"), message("koji")])
            assert result.notifications == 2
            assert heard() == []  # not before the commit
        assert heard() == announced

        with database.begin() as session:  # no outbox rows: nothing to announce
            assert ingest_batch(session, matcher, [message("bodhi")]).notifications == 0
        assert heard() == []

        with pytest.raises(RuntimeError), database.begin() as session:
            assert ingest_batch(session, matcher, [message("koji")]).notifications == 1
            raise RuntimeError("rolled back")
        assert heard() == []
        assert count(database, Notification) == 2
    finally:
        listener.close()
        engine.dispose()


def test_ingest_stores_the_same_columns_for_one_row_as_for_many(db: Database) -> None:
    """On PostgreSQL one row goes as scalars (``VALUES``), more as arrays (``unnest``)."""
    from fmn_daemon.ingest import _MESSAGES, _message_row, _pg_insert

    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})], name="koji ✓")
    matcher = load_matcher(db)
    text = '{"a": "w\\u00f6rld ✓", "q": "x\\"y\\\\z", "n": null, "l": [1, 2.5]}'
    headers = {"x": "w\u00f6rld ✓", "n": 7, "t": True, "none": None, "big": 2**70}
    properties = pika.BasicProperties(message_id="one", headers=headers)
    decoded, body_json = read_delivery(
        "org.fedoraproject.test.koji.build", properties, text.encode()
    )
    alone = facts_of(decoded, body_json=body_json)
    together = [replace(alone, id="two"), replace(alone, id="three")]
    row = _message_row(alone, True)
    assert " FROM (VALUES (" in _pg_insert(_MESSAGES, [row], {"received_at": utcnow()})[0]
    assert " FROM unnest(" in _pg_insert(_MESSAGES, [row, row], {"received_at": utcnow()})[0]

    with db.begin() as session:
        assert ingest_batch(session, matcher, [alone]).notifications == 1
    with db.begin() as session:
        assert ingest_batch(session, matcher, together).notifications == 2

    with db.begin() as session:
        stored = {
            m.id: (m.topic, m.body, m.headers, m.summary, m.url, m.app)
            for m in session.scalars(select(StoredMessage))
        }
        raw = dict(
            session.execute(select(StoredMessage.id, func.cast(StoredMessage.body, String))).all()
        )
        outbox = {
            n.message_id: (n.user_id, n.context, n.filter_id, n.filter_name, n.state, n.attempts)
            for n in session.scalars(select(Notification))
        }
    assert stored["one"] == stored["two"] == stored["three"]
    assert raw["one"] == raw["two"] == raw["three"]
    assert outbox["one"] == outbox["two"] == outbox["three"]


def test_ingest_stores_the_same_rows_whether_columns_travel_joined_or_as_arrays(
    db: Database,
) -> None:
    """On PostgreSQL a batch's columns go as one text each, split by the database, unless
    a value holds a separator; then as arrays. Either way each row is what was given."""
    from fmn_daemon.ingest import (
        _MESSAGES,
        _NOTIFICATIONS,
        _joined_columns,
        _message_row,
        _pg_insert,
    )

    assert _joined_columns([[1, None, 22], ["a", None, ""]], [False, False]) == [
        "1\x1f\x1e\x1f22",
        "a\x1f\x1e\x1f",
    ]
    for mixed in ([1, "2"], [True, 1], [1.5, 2], ["a", b"b"]):
        assert _joined_columns([mixed], [False]) is None
    assert _joined_columns([["a\x1eb", "c"]], [False]) is None
    assert _joined_columns([["\x1e", None]], [False]) is None

    odd_name = "bodhi \x1f\x1e ✓"
    with db.begin() as session:
        add_filter(session, "alice", [("app_is", {"app": "koji"})], name="koji ✓")
        add_filter(session, "bob", [("app_is", {"app": "koji"})], name="plain", context="irc")
        add_filter(session, "carol", [("app_is", {"app": "bodhi"})], name=odd_name)
    matcher = load_matcher(db)

    def facts(ident: str, topic: str, body: dict[str, object]) -> MessageFacts:
        properties = pika.BasicProperties(message_id=ident, headers={"k": "v\x1f"})
        decoded, body_json = read_delivery(topic, properties, json.dumps(body).encode())
        return facts_of(decoded, body_json=body_json)

    koji, bodhi = "org.fedoraproject.test.koji.build", "org.fedoraproject.test.bodhi.update"
    clean = [facts(f"clean-{i}", koji, {"n": i, "s": "a\u001fb"}) for i in range(3)]
    # A separator in an id, in a topic, in a filter's name: each goes as arrays.
    odd_id = [facts("odd\x1fid", koji, {"n": 1}), facts("odd-2", koji, {"n": 2})]
    odd_topic = [facts("odd-3", koji + ".\x1e", {"n": 3}), facts("odd-4", koji, {"n": 4})]
    odd_filter = [facts("odd-5", bodhi, {"n": 5}), facts("odd-6", bodhi, {"n": 6})]
    now = {"received_at": utcnow()}
    outbox_constants = {
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now["received_at"],
        "created_at": now["received_at"],
    }

    def travels_joined(table: Any, rows: list[dict[str, Any]]) -> bool:
        constants = now if table is _MESSAGES else outbox_constants
        statement = _pg_insert(table, rows, constants)[0]
        assert ("string_to_array(" in statement) != ("%b::text[]" in statement)
        return "string_to_array(" in statement

    def outbox_row(ident: str, name: str) -> dict[str, Any]:
        return {
            "message_id": ident,
            "user_id": 1,
            "context": "email",
            "filter_id": None,
            "filter_name": name,
        }

    assert travels_joined(_MESSAGES, [_message_row(f, True) for f in clean])
    assert travels_joined(_MESSAGES, [_message_row(f, True) for f in odd_filter])
    for batch in (odd_id, odd_topic):
        assert not travels_joined(_MESSAGES, [_message_row(f, True) for f in batch])
    assert travels_joined(_NOTIFICATIONS, [outbox_row("a", "x"), outbox_row("b", "y")])
    assert not travels_joined(_NOTIFICATIONS, [outbox_row("a", "x"), outbox_row("b", odd_name)])

    for batch, rows in ((clean, 2), (odd_id, 2), (odd_topic, 2), (odd_filter, 1)):
        with db.begin() as session:
            assert ingest_batch(session, matcher, batch).notifications == rows * len(batch)

    everything = [*clean, *odd_id, *odd_topic, *odd_filter]
    with db.begin() as session:
        stored = {
            m.id: (m.topic, m.body, m.headers, m.summary, m.url, m.app)
            for m in session.scalars(select(StoredMessage))
        }
        outbox = sorted(
            (n.message_id, n.user_id, n.context, n.filter_id, n.filter_name)
            for n in session.scalars(select(Notification))
        )
        users = dict(session.execute(select(User.name, User.id)).all())
        filters = {f.name: f.id for f in session.scalars(select(Filter))}
    assert stored == {f.id: (f.topic, f.body, {"k": "v\x1f"}, *_display(f)) for f in everything}
    assert stored["clean-1"][1] == {"n": 1, "s": "a\x1fb"}
    assert stored["clean-1"][4] is None  # a NULL among the joined values
    expected = []
    for f in everything:
        if f.topic.startswith(bodhi):
            expected.append((f.id, users["carol"], "email", filters[odd_name], odd_name))
        else:
            expected.append((f.id, users["alice"], "email", filters["koji ✓"], "koji ✓"))
            expected.append((f.id, users["bob"], "irc", filters["plain"], "plain"))
    assert outbox == sorted(expected)


def _display(facts: MessageFacts) -> tuple[str, str | None, str]:
    from fmn_core.display import display_fields

    return display_fields(facts)


def _headers_as_before(headers: Any, limits: IngestConfig) -> tuple[str, Any]:
    """What ``read_delivery`` made of a delivery's headers before the flat table was
    seen once: ``check_headers`` on its own, then ``json_safe``'s copy."""
    from fmn_core.messages import check_headers

    try:
        check_headers(headers, limits)
    except Exception as exc:  # a key json.dumps refuses raises TypeError, as before
        return type(exc).__name__, str(exc)
    return "taken", json_safe(headers)


@pytest.mark.parametrize("max_header_bytes", [16, 60, 200, 65536])
def test_read_delivery_checks_and_copies_headers_as_before(max_header_bytes: int) -> None:
    from fmn_core.messages import _SCALARS
    from fmn_daemon.ingest import _PLAIN

    # ``check_headers(flat=True)`` skips its own test of the values for this one.
    assert _PLAIN == _SCALARS
    limits = IngestConfig(max_header_bytes=max_header_bytes, max_header_depth=3)
    tables: list[Any] = [
        {},
        {"fedora_messaging_schema": "base.message", "fedora_messaging_severity": 20},
        {"x": "w\u00f6rld ✓" * 5, "n": 7, "t": True, "none": None, "f": -1.5e-300},
        {"q": 'a"b\\c\x01' * 4, "nan": float("nan"), "inf": float("inf")},
        {"big": 2**70, "x": "y"},  # an integer beyond the bound's 24 characters
        {"long": "é" * 40},
        {b"raw": "x", 1: 2, "s": "y"},  # keys that are not strings
        {"b": b"bytes", "x": "y"},  # a value that is not plain
        {"nested": {"a": [1, "b"]}},
        {"deep": {"a": {"b": {"c": {"d": 1}}}}},
        {"d": [[[["x"]]]]},
    ]
    for table in tables:
        expected = _headers_as_before(table, limits)
        properties = pika.BasicProperties(message_id="m1", headers=table)
        try:
            decoded, _ = read_delivery(
                "org.fedoraproject.test.koji.build", properties, b"{}", limits
            )
        except MalformedMessage as exc:
            assert expected == ("MalformedMessage", str(exc)), table
            assert exc.message_id == "m1"
            continue
        except Exception as exc:
            assert expected == (type(exc).__name__, str(exc)), table
            continue
        assert expected[0] == "taken", table
        taken = decoded._properties.headers
        assert taken is not table and taken == expected[1]
        assert list(taken.items()) == list(expected[1].items())
        assert [type(k) for k in taken] == [str] * len(taken)


@pytest.mark.postgres
def test_a_oneshot_filter_two_transactions_match_at_once_fires_once(
    empty_postgres_url: str,
) -> None:
    """Two writers (threads or processes) match one one-shot filter in open transactions:
    the second waits for the first to commit, finds the filter off, and sends nothing."""
    upgrade(empty_postgres_url)
    db = Database(Config(database_url=empty_postgres_url))
    try:
        with db.begin() as session:
            once_id = add_filter(
                session, "carol", [("app_is", {"app": "koji"})], name="once", oneshot=True
            ).id
        first_matcher, second_matcher = load_matcher(db), load_matcher(db)
        first_message, second_message = message("koji"), message("koji")
        outcome: dict[str, Any] = {}

        def second() -> None:
            with db.begin() as session:
                outcome["result"] = ingest_batch(session, second_matcher, [second_message])

        with db.begin() as session:
            first = ingest_batch(session, first_matcher, [first_message])
            assert first.oneshots_fired == [once_id]
            racing = threading.Thread(target=second)
            racing.start()
            racing.join(0.5)
            # It waits on the filter's row, which this open transaction switched off.
            assert racing.is_alive()
        racing.join(10)
        assert not racing.is_alive()

        late = outcome["result"]
        assert late.stored == 1
        assert late.oneshots_fired == []
        assert late.recipients[second_message.id] == []
        with db.begin() as session:
            rows = session.scalars(select(Notification.message_id)).all()
            events = session.scalars(select(ChangeEvent.kind)).all()
        assert rows == [first_message.id]
        assert events == ["oneshot_fired"]
    finally:
        db.dispose()
