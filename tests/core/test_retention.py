"""Retention: what is pruned past ``retention.days``, what never is, and in what steps."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session

from fmn_core.config import Config, ConfirmationConfig, RetentionConfig, load_config
from fmn_core.db import Database, make_engine
from fmn_core.errors import ConfigError
from fmn_core.matcher import GAP_WINDOW
from fmn_core.models import (
    Base,
    ChangeEvent,
    CodeSend,
    DeadMessage,
    Notification,
    StoredMessage,
    User,
    utcnow,
)
from fmn_core.retention import Pruned, Pruning, cutoff_for, prunable

from .test_outbox import add_message, add_notification, add_user

NOW = utcnow()
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=10)
CUTOFF = cutoff_for(30, NOW)
#: How long code records count by default (a day).
COUNTED = ConfirmationConfig().counted_for


def pruning(cutoff: dt.datetime, limit: int, counted_for: dt.timedelta = COUNTED) -> Pruning:
    return Pruning(cutoff, limit, codes_counted_for=counted_for)


def _message(session: Session, received_at: dt.datetime) -> StoredMessage:
    message = add_message(session)
    message.received_at = received_at
    session.flush()
    return message


def _row(
    session: Session,
    user: User,
    received_at: dt.datetime,
    state: str,
    due: dt.datetime,
    sent_at: dt.datetime | None = None,
    message: StoredMessage | None = None,
) -> Notification:
    message = message if message is not None else _message(session, received_at)
    return add_notification(
        session, user, message=message, state=state, next_attempt_at=due, sent_at=sent_at
    )


@dataclass
class Seeded:
    """Ids of what must go and what must stay."""

    gone_notifications: set[int]
    kept_notifications: set[int]
    gone_messages: set[str]
    kept_messages: set[str]
    gone_dead: set[int]
    kept_dead: set[int]
    gone_changes: set[int]
    kept_changes: set[int]
    gone_codes: set[int]
    kept_codes: set[int]

    def kept(self) -> Left:
        return Left(
            self.kept_notifications,
            self.kept_messages,
            self.kept_dead,
            self.kept_changes,
            self.kept_codes,
        )

    def gone(self) -> Pruned:
        return Pruned(
            notifications=len(self.gone_notifications),
            messages=len(self.gone_messages),
            dead_messages=len(self.gone_dead),
            change_events=len(self.gone_changes),
            code_sends=len(self.gone_codes),
        )


@dataclass
class Left:
    """Ids of what is in the database, by table."""

    notifications: set[int]
    messages: set[str]
    dead: set[int]
    changes: set[int]
    codes: set[int]


def left(session: Session) -> Left:
    return Left(
        set(session.scalars(select(Notification.id))),
        set(session.scalars(select(StoredMessage.id))),
        set(session.scalars(select(DeadMessage.id))),
        set(session.scalars(select(ChangeEvent.id))),
        set(session.scalars(select(CodeSend.id))),
    )


def _change(session: Session, user_id: int, created_at: dt.datetime) -> ChangeEvent:
    change = ChangeEvent(user_id=user_id, kind="filters", created_at=created_at)
    session.add(change)
    session.flush()
    return change


def _changes(session: Session, user_id: int, created_at: dt.datetime, count: int) -> list[int]:
    """``count`` changes in one statement; their ids, in order."""
    rows = [{"user_id": user_id, "kind": "filters", "created_at": created_at}] * count
    statement = insert(ChangeEvent).returning(ChangeEvent.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, rows))


def _code(session: Session, user: User, created_at: dt.datetime) -> CodeSend:
    code = CodeSend(user_id=user.id, address_key="k" * 64, created_at=created_at)
    session.add(code)
    session.flush()
    return code


def seed(session: Session) -> Seeded:
    jo = add_user(session, "jo")
    sent_long_ago = _row(session, jo, OLD, "sent", OLD, OLD)
    given_up_long_ago = _row(session, jo, OLD, "dead", OLD)
    # Waiting, whatever their age: held for a digest, retried later, being sent now.
    held = _row(session, jo, OLD, "pending", NOW + dt.timedelta(hours=3))
    overdue = _row(session, jo, OLD, "pending", OLD)
    retried = _row(session, jo, OLD, "failed", NOW + dt.timedelta(minutes=5))
    sending = _row(session, jo, OLD, "sending", OLD)
    sent_lately = _row(session, jo, RECENT, "sent", RECENT, RECENT)
    # Due long ago, sent only lately (it waited for a digest): kept until its sending ages.
    waited_then_sent = _row(session, jo, OLD, "sent", OLD, RECENT)
    # One message, two users: the sent row goes, the waiting one keeps the message.
    shared = _message(session, OLD)
    ann = add_user(session, "ann")
    shared_sent = _row(session, jo, OLD, "sent", OLD, OLD, message=shared)
    shared_waiting = _row(session, ann, OLD, "pending", NOW + dt.timedelta(days=1), message=shared)
    nobodys_old = _message(session, OLD)
    nobodys_recent = _message(session, RECENT)
    dead_old = DeadMessage(message_id="m1", topic="t", reason="r", raw=b"x", received_at=OLD)
    dead_recent = DeadMessage(message_id="m2", topic="t", reason="r", raw=b"x", received_at=RECENT)
    session.add_all([dead_old, dead_recent])
    session.flush()
    # Preference changes: every matcher applied the old ones long ago, but the ids
    # closest below the newest stay whatever their age (see the next tests).
    changed_long_ago = [_change(session, jo.id, OLD), _change(session, ann.id, OLD)]
    near_the_newest = _changes(session, jo.id, OLD, GAP_WINDOW)
    changed_lately = _change(session, jo.id, RECENT)
    # Codes sent: counted by the code limits for a day, kept as long as the rest.
    code_long_ago = _code(session, jo, OLD)
    code_lately = _code(session, jo, RECENT)
    return Seeded(
        gone_notifications={sent_long_ago.id, given_up_long_ago.id, shared_sent.id},
        kept_notifications={
            held.id,
            overdue.id,
            retried.id,
            sending.id,
            sent_lately.id,
            waited_then_sent.id,
            shared_waiting.id,
        },
        gone_messages={sent_long_ago.message_id, given_up_long_ago.message_id, nobodys_old.id},
        kept_messages={
            held.message_id,
            overdue.message_id,
            retried.message_id,
            sending.message_id,
            sent_lately.message_id,
            waited_then_sent.message_id,
            shared.id,
            nobodys_recent.id,
        },
        gone_dead={dead_old.id},
        kept_dead={dead_recent.id},
        gone_changes={change.id for change in changed_long_ago},
        kept_changes={*near_the_newest, changed_lately.id},
        gone_codes={code_long_ago.id},
        kept_codes={code_lately.id},
    )


def _left(db: Database) -> Left:
    with db.begin() as session:
        return left(session)


def _prune_all(db: Database, limit: int) -> tuple[Pruned, int]:
    pass_, steps = pruning(CUTOFF, limit), 0
    while True:
        with db.begin() as session:
            step = pass_.step(session)
        if not step:
            return pass_.done, steps
        assert step.total <= limit
        steps += 1


def test_prune_deletes_what_is_done_and_old_and_keeps_everything_still_waiting(
    db: Database,
) -> None:
    with db.begin() as session:
        seeded = seed(session)
    with db.begin() as session:
        counted = prunable(session, CUTOFF, codes_counted_for=COUNTED)
    pruned, _ = _prune_all(db, 5000)
    assert _left(db) == seeded.kept()
    expected = seeded.gone()
    # The dry run's count is what the pass then deleted.
    assert counted == expected
    assert pruned == expected
    # A second pass finds nothing.
    with db.begin() as session:
        assert not pruning(CUTOFF, 5000).step(session)
        assert not prunable(session, CUTOFF, codes_counted_for=COUNTED)


def test_prune_deletes_in_steps_of_at_most_the_batch(db: Database) -> None:
    with db.begin() as session:
        seeded = seed(session)
    pruned, steps = _prune_all(db, 1)
    gone = seeded.gone().total
    assert pruned.total == gone
    assert steps == gone
    assert _left(db) == seeded.kept()


def test_a_row_that_waited_long_and_died_lately_is_kept_its_whole_window(db: Database) -> None:
    from fmn_core import outbox

    with db.begin() as session:
        jo = add_user(session, "jo")
        refused = _row(session, jo, OLD, "pending", OLD)
        retried = _row(session, jo, OLD, "failed", OLD)
        retried.attempts = 7
        # Not the newest row (which SQLite keeps: see the test on ids below).
        _row(session, jo, NOW, "pending", NOW + dt.timedelta(days=90))
        session.flush()
    with db.begin() as session:
        # Both die now, 40 days after they were first due.
        outbox.mark_dead(session, [refused.id], "the context was turned off")
        state = outbox.mark_failed(
            session,
            retried.id,
            "SMTP said no",
            max_attempts=8,
            backoff_seconds=30,
            backoff_max_seconds=3600,
        )
        assert state == "dead"
    with db.begin() as session:
        assert not pruning(CUTOFF, 5000).step(session)
    assert {refused.id, retried.id} <= _left(db).notifications
    # Their window runs from their death.
    later = cutoff_for(30, NOW + dt.timedelta(days=31))
    with db.begin() as session:
        assert pruning(later, 5000).step(session).notifications == 2


def test_changes_near_the_newest_are_kept_so_matchers_neither_miss_nor_wait_for_any(
    db: Database,
) -> None:
    from fmn_core.matcher import Matcher

    with db.begin() as session:
        jo = add_user(session, "jo").id
        old = _changes(session, jo, OLD, GAP_WINDOW + 3)
    with db.begin() as session:
        running = Matcher.load(session)
    newest = max(old)
    assert running.last_change_id == newest
    pruned, _ = _prune_all(db, 5000)
    assert pruned == Pruned(change_events=2)
    assert _left(db).changes == set(old[2:])

    asked: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def note(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "change_events" in statement:
            asked.append(statement)

    # A matcher starting now finds no id missing below the newest, so it does not
    # ask for any at each batch as it would for transactions still in flight.
    with db.begin() as session:
        starting = Matcher.load(session)
        assert starting.apply_changes(session) == 0
    assert asked and not any(" IN (" in statement.upper() for statement in asked), asked
    # A change made after the pass gets an id past every one a matcher has seen (on
    # SQLite ids would start again from the highest row left), and reaches both.
    with db.begin() as session:
        later = _change(session, jo, NOW).id
        assert later > newest
        for matcher in (running, starting):
            assert matcher.apply_changes(session) == 1
            assert matcher.last_change_id == later
    event.remove(db.engine, "before_cursor_execute", note)


def test_ids_a_client_or_the_operator_saw_are_never_handed_out_again(db: Database) -> None:
    """Everything old and finished: on SQLite, which gives a new row the highest id
    left plus one, the newest notification and dead message stay; on PostgreSQL
    (a sequence) all go. Either way new rows get ids past every pruned one."""
    with db.begin() as session:
        jo = add_user(session, "jo")
        sent = [_row(session, jo, OLD, "sent", OLD, OLD).id for _ in range(3)]
        dead = []
        for n in range(3):
            row = DeadMessage(message_id=f"d{n}", topic="t", reason="r", raw=b"x", received_at=OLD)
            session.add(row)
            session.flush()
            dead.append(row.id)
        counted = prunable(session, CUTOFF, codes_counted_for=COUNTED)
    pruned, _ = _prune_all(db, 5000)
    assert pruned.notifications == counted.notifications
    assert pruned.messages == counted.messages
    assert pruned.dead_messages == counted.dead_messages
    kept = _left(db)
    if db.engine.dialect.name == "sqlite":
        assert kept.notifications == {max(sent)} and kept.dead == {max(dead)}
        assert kept.messages and pruned.messages == len(sent) - 1
    else:
        assert kept.notifications == set() and kept.dead == set()
    with db.begin() as session:
        jo = session.get_one(User, jo.id)
        assert _row(session, jo, RECENT, "sent", RECENT, RECENT).id > max(sent)
        later = DeadMessage(message_id="d9", topic="t", reason="r", raw=b"x", received_at=NOW)
        session.add(later)
        session.flush()
        assert later.id > max(dead)


def test_code_records_stay_as_long_as_a_code_limit_counts_them(db: Database) -> None:
    with db.begin() as session:
        jo = add_user(session, "jo")
        old = _code(session, jo, OLD).id
    # Limits that count codes over sixty days keep a 40-day-old record past the
    # 30-day window; the default day's limits do not.
    sixty_days = ConfirmationConfig(code_window_hours=60 * 24).counted_for
    with db.begin() as session:
        assert prunable(session, CUTOFF, codes_counted_for=sixty_days).code_sends == 0
        assert not pruning(CUTOFF, 5000, sixty_days).step(session)
        assert prunable(session, CUTOFF, codes_counted_for=COUNTED).code_sends == 1
        assert pruning(CUTOFF, 5000).step(session) == Pruned(code_sends=1)
    assert old not in _left(db).codes


def test_cutoff_needs_at_least_a_day() -> None:
    assert cutoff_for(1, NOW) == NOW - dt.timedelta(days=1)
    with pytest.raises(ValueError, match="at least one day"):
        cutoff_for(0, NOW)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("days", -1, "retention.days"),
        ("days", 40_000, "retention.days"),
        ("batch_rows", 0, "retention.batch_rows"),
        ("interval_minutes", 0, "retention.interval_minutes"),
    ],
)
def test_retention_settings_out_of_range_name_their_key(key: str, value: int, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        RetentionConfig(**{key: value})


def test_retention_is_read_from_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "fmn.toml"
    path.write_text("[retention]\ndays = 45\nbatch_rows = 100\n", encoding="utf-8")
    config = load_config(path)
    assert config.retention == RetentionConfig(days=45, batch_rows=100, interval_minutes=60)
    # A window shorter than the action links' needs them shorter too.
    path.write_text("[retention]\ndays = 7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"http\.action_link_days"):
        load_config(path)
    path.write_text("[retention]\ndays = 7\n[http]\naction_link_days = 7\n", encoding="utf-8")
    assert load_config(path).retention.days == 7
    path.write_text('[retention]\ndays = "soon"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"retention\.days.*whole number"):
        load_config(path)
    assert Config().retention.days == 30


def test_action_links_may_not_outlive_the_notifications_they_act_on() -> None:
    from fmn_core.config import HttpConfig

    with pytest.raises(ConfigError, match=r"http\.action_link_days.*outlives retention\.days"):
        Config(retention=RetentionConfig(days=7), http=HttpConfig(action_link_days=30))
    assert Config(retention=RetentionConfig(days=7), http=HttpConfig(action_link_days=7))
    # Kept for ever: any link lifetime goes.
    assert Config(retention=RetentionConfig(days=0), http=HttpConfig(action_link_days=365))


# -- PostgreSQL: daemons pruning at once, and rows another process holds ---------------


@pytest.fixture
def committed_postgres(empty_postgres_url: str) -> Iterator[Database]:
    """A PostgreSQL database whose rows other connections see (no outer transaction)."""
    engine = make_engine(empty_postgres_url)
    Base.metadata.create_all(engine)
    db = Database(Config(database_url=empty_postgres_url), engine)
    try:
        yield db
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_prune_skips_rows_another_transaction_holds_instead_of_waiting(
    committed_postgres: Database,
) -> None:
    db = committed_postgres
    with db.begin() as session:
        seeded = seed(session)
    held_id = min(seeded.gone_notifications)
    with db.engine.connect() as holder:
        holder.begin()
        # As a sender (or another daemon's pruning) holds a row it is working on.
        holder.execute(
            text("SELECT id FROM notifications WHERE id = :id FOR UPDATE"), {"id": held_id}
        )
        started = time.monotonic()
        with db.begin() as session:
            session.execute(text("SET LOCAL lock_timeout = '5s'"))
            step = pruning(CUTOFF, 5000).step(session)
        assert time.monotonic() - started < 3
        assert step.notifications == len(seeded.gone_notifications) - 1
        holder.rollback()
    assert held_id in _left(db).notifications
    # Once let go, the next pass takes it (and its message).
    pruned, _ = _prune_all(db, 5000)
    assert pruned.notifications == 1
    assert _left(db) == seeded.kept()
