"""The outbox: claiming with leases, backoff, postponing, dead rows, and feeds' reads."""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fmn_core import masking, outbox
from fmn_core.db import Database
from fmn_core.display import display_of
from fmn_core.messages import facts_of, load_message
from fmn_core.models import (
    Destination,
    Filter,
    Notification,
    Preference,
    StoredMessage,
    User,
    utcnow,
)

#: A real bodhi message from the shared corpus (its schema gives agent, packages, url).
BODHI: dict[str, Any] = {
    "body": {"override": {"nvr": "libxcrypt-4.4.4-2.fc28", "submitter": {"name": "lmacken"}}},
    "headers": {},
    "id": "1ad33449-4c4d-5a09-9af1-ad29487bf3e9",
    "topic": "org.fedoraproject.prod.bodhi.buildroot_override.tag",
}
BODHI_SUMMARY = "lmacken submitted a buildroot override for libxcrypt-4.4.4-2.fc28"


# -- seeding helpers (the daemon's tests use them too) ---------------------------------


def add_message(
    session: Session, data: dict[str, Any] | None = None, **changes: Any
) -> StoredMessage:
    """Store a bus message; a fresh id unless one is given."""
    base = dict(data or BODHI)
    base.update(changes)
    if "id" not in changes:
        base["id"] = str(uuid.uuid4())
    headers = base.get("headers") or {}
    # What ingest stores for feeds and the live feed (fmn_core.display).
    shown = display_of(
        facts_of(
            load_message(
                {"id": base["id"], "topic": base["topic"], "body": base["body"], "headers": headers}
            )
        )
    )
    message = StoredMessage(
        id=base["id"],
        topic=base["topic"],
        body=base["body"],
        headers=headers,
        summary=shown.summary,
        url=shown.url,
        app=shown.app,
    )
    session.add(message)
    session.flush()
    return message


def add_user(
    session: Session,
    name: str,
    context: str = "email",
    addresses: tuple[str, ...] = ("jo@example.org",),
    *,
    confirmed: bool = True,
    enabled: bool = True,
    digest_minutes: int = 0,
    digest_count: int = 0,
) -> User:
    """A user with one preference for ``context`` and its destinations."""
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    preference = Preference(
        user_id=user.id,
        context=context,
        enabled=enabled,
        digest_minutes=digest_minutes,
        digest_count=digest_count,
    )
    session.add(preference)
    session.flush()
    for address in addresses:
        session.add(Destination(preference_id=preference.id, address=address, confirmed=confirmed))
    session.flush()
    return user


def add_notification(
    session: Session,
    user: User,
    context: str = "email",
    message: StoredMessage | None = None,
    **values: Any,
) -> Notification:
    """An outbox row (pending and due unless ``values`` say otherwise)."""
    message = message if message is not None else add_message(session)
    values.setdefault("filter_name", "my packages")
    notification = Notification(message_id=message.id, user_id=user.id, context=context, **values)
    session.add(notification)
    session.flush()
    return notification


def state_of(db: Database, notification_id: int) -> Notification:
    """The row as the database has it now."""
    with db.begin() as session:
        row: Notification | None = session.get(Notification, notification_id)
        assert row is not None
        session.expunge(row)
        return row


# -- claiming -------------------------------------------------------------------------------


def test_claim_due_returns_everything_needed_to_render(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", addresses=("jo@example.org", "jo@work.example.com"))
        row_id = add_notification(session, user).id
    with db.begin() as session:
        claimed = outbox.claim_due(session, worker="w1", limit=10, lease_seconds=60)
    assert [c.id for c in claimed] == [row_id]
    item = claimed[0]
    assert item.summary == BODHI_SUMMARY
    assert item.app == "bodhi"
    assert item.agent == "lmacken"
    assert item.packages == ("libxcrypt",)
    assert item.url == "https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28"
    assert item.topic == BODHI["topic"]
    assert item.user == "jo" and item.context == "email" and item.filter_name == "my packages"
    assert item.destinations == ("jo@example.org", "jo@work.example.com")
    assert item.enabled and not item.wants_digest and item.muted_until is None
    assert "jo@example.org" not in repr(item)
    row = state_of(db, row_id)
    assert row.state == "sending" and row.claimed_by == "w1"
    assert row.claimed_until is not None and row.claimed_until > utcnow()


def test_claim_due_returns_what_the_load_of_its_rows_reads(db: Database) -> None:
    # On PostgreSQL the claim and the load are one statement (driver SQL, its rows
    # read by hand): whatever it returns, the load of the same rows must read too,
    # for every shape a row can take.
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo", addresses=("b@example.org", "a@example.org"))
        session.add(
            Destination(
                preference_id=session.scalars(select(Preference.id)).one(),
                address="unconfirmed@example.org",
                confirmed=False,
            )
        )
        preference = session.scalars(select(Preference).where(Preference.user_id == jo.id)).one()
        preference.digest_at = "08:30"
        preference.digest_timezone = "Europe/Prague"
        preference.quiet_from, preference.quiet_to = "22:00", "07:00"
        preference.quiet_timezone = "Asia/Tokyo"
        urgent = Filter(preference_id=preference.id, name="urgent", delivery="instant", urgent=True)
        digest = Filter(preference_id=preference.id, name="later", delivery="digest")
        session.add_all([urgent, digest])
        muted = add_user(session, "al", addresses=())
        muted.muted_until = now + dt.timedelta(hours=2)
        muted.link_nonce = 7
        session.flush()
        ids = [
            add_notification(session, jo, filter_id=urgent.id, created_at=now).id,
            # Older than the row before it, with a larger id: oldest first all the same.
            add_notification(
                session,
                jo,
                filter_id=digest.id,
                created_at=now - dt.timedelta(minutes=3),
                state="failed",
                attempts=2,
                hold_reason="retry",
            ).id,
            # Its filter is gone; its user has no preference for the context.
            add_notification(session, muted, "sms", created_at=now - dt.timedelta(minutes=1)).id,
            # A lease that expired (a sender that never came back).
            add_notification(
                session,
                muted,
                created_at=now - dt.timedelta(minutes=2),
                state="sending",
                claimed_by="gone",
                claimed_until=now - dt.timedelta(seconds=1),
            ).id,
        ]
    with db.begin() as session:
        claimed = outbox.claim_due(session, worker="w1", limit=10, lease_seconds=60)
        loaded = outbox._load_claimed(session, [c.id for c in claimed])
    assert claimed == loaded
    assert [c.id for c in claimed] == [ids[1], ids[3], ids[2], ids[0]]
    first = claimed[3]
    assert first.destinations == ("b@example.org", "a@example.org")
    assert first.urgent and first.delivery == "instant" and first.quiet is not None
    assert first.created_at == now and first.created_at.tzinfo == dt.UTC
    assert claimed[0].attempts == 2 and claimed[0].hold_reason == "retry"
    assert claimed[0].wants_digest and claimed[0].digest_timezone == "Europe/Prague"
    gone = claimed[2]
    assert gone.destinations == () and gone.delivery == "digest" and not gone.enabled
    assert gone.muted_until == muted.muted_until and gone.link_nonce == 7
    assert {state_of(db, i).claimed_by for i in ids} == {"w1"}


def test_claim_due_only_confirmed_destinations(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", addresses=("jo@example.org",), confirmed=False)
        add_notification(session, user)
    with db.begin() as session:
        (item,) = outbox.claim_due(session, worker="w1", limit=10, lease_seconds=60)
    assert item.destinations == ()


def test_claim_due_skips_rows_not_due_claimed_or_excluded(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo")
        add_user(session, "jo", "irc", ("jo_",))
        due = add_notification(session, user).id
        add_notification(session, user, next_attempt_at=now + dt.timedelta(minutes=5))
        add_notification(session, user, state="sent")
        add_notification(session, user, state="dead")
        irc = add_notification(session, user, "irc").id
        leased = add_notification(
            session,
            user,
            state="sending",
            claimed_by="other",
            claimed_until=now + dt.timedelta(minutes=5),
        ).id
    with db.begin() as session:
        claimed = outbox.claim_due(
            session, worker="w1", exclude_contexts=("irc",), limit=10, lease_seconds=60
        )
    assert [c.id for c in claimed] == [due]
    with db.begin() as session:
        again = outbox.claim_due(session, worker="w1", limit=10, lease_seconds=60)
    assert [c.id for c in again] == [irc]
    assert state_of(db, leased).claimed_by == "other"


def test_claim_due_filters_by_context_and_honours_limit(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "jo")
        add_user(session, "jo", "irc", ("jo_",))
        email_ids = [add_notification(session, user).id for _ in range(3)]
        add_notification(session, user, "irc")
    with db.begin() as session:
        first = outbox.claim_due(session, worker="w", contexts=["email"], limit=2, lease_seconds=60)
        second = outbox.claim_due(
            session, worker="w", contexts=["email"], limit=2, lease_seconds=60
        )
    assert sorted(c.id for c in first + second) == email_ids
    assert {c.context for c in first + second} == {"email"}


def test_claim_due_reclaims_rows_whose_lease_expired(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo")
        crashed = add_notification(
            session,
            user,
            state="sending",
            claimed_by="dead-worker",
            claimed_until=now - dt.timedelta(seconds=1),
        ).id
    with db.begin() as session:
        claimed = outbox.claim_due(session, worker="w2", limit=10, lease_seconds=60)
    assert [c.id for c in claimed] == [crashed]
    assert state_of(db, crashed).claimed_by == "w2"


def test_claim_due_falls_back_to_topic_without_summary(db: Database) -> None:
    plain = {"topic": "org.fedoraproject.prod.mystery.thing", "body": {"x": 1}, "headers": {}}
    with db.begin() as session:
        user = add_user(session, "jo")
        add_notification(session, user, message=add_message(session, plain))
    with db.begin() as session:
        (item,) = outbox.claim_due(session, worker="w", limit=10, lease_seconds=60)
    assert item.summary == "org.fedoraproject.prod.mystery.thing"
    assert item.app == "mystery"


def test_claim_due_postgres_skips_rows_locked_by_another_claim(postgres_engine: Any) -> None:
    from fmn_core.config import Config

    database = Database(Config(database_url=str(postgres_engine.url)), postgres_engine)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    with database.begin() as session:
        user = add_user(session, name)
        ids = sorted(add_notification(session, user).id for _ in range(4))
    try:
        first_claimed = threading.Event()
        release_first = threading.Event()
        results: dict[str, list[int]] = {}

        def first() -> None:
            with database.begin() as session:
                claimed = outbox.claim_due(
                    session, worker="a", contexts=["email"], limit=2, lease_seconds=60
                )
                results["a"] = [c.id for c in claimed if c.user == name]
                first_claimed.set()
                release_first.wait(10)

        thread = threading.Thread(target=first)
        thread.start()
        assert first_claimed.wait(10)
        # The first transaction is still open and holds its rows' locks: the
        # second claim must skip them, not wait for them.
        with database.begin() as session:
            claimed = outbox.claim_due(
                session, worker="b", contexts=["email"], limit=10, lease_seconds=60
            )
            results["b"] = [c.id for c in claimed if c.user == name]
        release_first.set()
        thread.join(10)
        assert len(results["a"]) == 2
        assert sorted(results["a"] + results["b"]) == ids
    finally:
        release_first.set()
        with database.begin() as session:
            session.delete(session.scalars(select(User).where(User.name == name)).one())
            session.execute(
                delete(StoredMessage).where(~StoredMessage.id.in_(select(Notification.message_id)))
            )


# -- outcomes ---------------------------------------------------------------------------------


def test_mark_sent_records_the_time_and_frees_the_claim(db: Database) -> None:
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    with db.begin() as session:
        outbox.claim_due(session, worker="w", limit=10, lease_seconds=60)
        assert outbox.mark_sent(session, [row_id]) == 1
    row = state_of(db, row_id)
    assert row.state == "sent" and row.sent_at is not None
    assert row.claimed_by is None and row.claimed_until is None


def test_mark_sent_autocommitted_leaves_rows_as_mark_sent_does(postgres_engine: Any) -> None:
    # The senders' fast path writes its own SQL: a column ``mark_sent`` resets
    # that it forgot would leave a sent row looking claimed, held or failed.
    from fmn_core.config import Config

    database = Database(Config(database_url=str(postgres_engine.url)), postgres_engine)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    at = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC)
    columns = [c.name for c in Notification.__table__.columns if c.name not in {"id", "message_id"}]
    try:
        with database.begin() as session:
            user = add_user(session, name)
            worn: dict[str, Any] = {
                "attempts": 2,
                "claimed_by": "w",
                "claimed_until": at,
                "last_error": "earlier failure",
                "hold_reason": "quiet-hours",
                "created_at": at,
                "next_attempt_at": at,
            }
            ids = [add_notification(session, user, **worn).id for _ in range(4)]
        with database.begin() as session:
            assert outbox.mark_sent(session, ids[:2], now=at) == 2
        with database.autocommit() as connection:
            assert outbox.mark_sent_autocommitted(connection, ids[2:], now=at) == 2
            assert outbox.mark_sent_autocommitted(connection, [], now=at) == 0
        rows = [state_of(database, i) for i in ids]
        seen = [{c: getattr(row, c) for c in columns} for row in rows]
        assert seen[0]["state"] == "sent" and seen[0]["sent_at"] == at
        assert seen[0]["claimed_by"] is None and seen[0]["last_error"] is None
        assert seen[0]["hold_reason"] is None and seen[0]["attempts"] == 2
        assert seen[2] == seen[0] and seen[3] == seen[1]
    finally:
        with database.begin() as session:
            session.delete(session.scalars(select(User).where(User.name == name)).one())
            session.execute(
                delete(StoredMessage).where(~StoredMessage.id.in_(select(Notification.message_id)))
            )


def test_mark_failed_backs_off_then_goes_dead_with_masked_error(db: Database) -> None:
    with db.begin() as session:
        row_id = add_notification(
            session, add_user(session, "jo", addresses=("joanna@example.org",))
        ).id
    now = utcnow()
    states = []
    for attempt in range(1, 4):
        with db.begin() as session:
            states.append(
                outbox.mark_failed(
                    session,
                    row_id,
                    "550 mailbox joanna@example.org unavailable; also bob@other.example.net",
                    max_attempts=3,
                    backoff_seconds=10,
                    backoff_max_seconds=25,
                    now=now,
                )
            )
        row = state_of(db, row_id)
        assert row.attempts == attempt
        if attempt < 3:
            delay = (row.next_attempt_at - now).total_seconds()
            nominal = min(25, 10 * 2 ** (attempt - 1))
            assert nominal <= delay <= nominal * 1.1
    assert states == ["failed", "failed", "dead"]
    assert row.last_error is not None
    assert "joanna@example.org" not in row.last_error
    assert "bob@other.example.net" not in row.last_error
    assert "550 mailbox" in row.last_error


def test_a_sender_whose_lease_ran_out_records_no_failure_on_a_row_taken_since(
    db: Database,
) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo")
        failing, refused = (add_notification(session, user).id for _ in range(2))
    with db.begin() as session:
        outbox.claim_due(session, worker="A", limit=10, lease_seconds=60, now=now)
    later = now + dt.timedelta(seconds=120)
    with db.begin() as session:
        taken = outbox.claim_due(session, worker="B", limit=10, lease_seconds=60, now=later)
        assert {row.id for row in taken} == {failing, refused}
        outbox.mark_sent(session, [failing], now=later)
    with db.begin() as session:
        # A's failures come late: the one B sent stays sent, the one B holds stays B's.
        assert (
            outbox.mark_failed(
                session,
                failing,
                "timed out",
                max_attempts=3,
                backoff_seconds=10,
                backoff_max_seconds=25,
                worker="A",
            )
            == "sent"
        )
        assert outbox.mark_dead(session, [refused], "refused", worker="A") == 0
    sent, held = state_of(db, failing), state_of(db, refused)
    assert (sent.state, sent.attempts, sent.last_error) == ("sent", 0, None)
    assert (held.state, held.claimed_by, held.attempts) == ("sending", "B", 0)
    with db.begin() as session:
        # B's own outcome is recorded.
        assert outbox.mark_dead(session, [refused], "refused", worker="B") == 1
    assert state_of(db, refused).state == "dead"


def test_mark_failed_truncates_long_errors(db: Database) -> None:
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    with db.begin() as session:
        outbox.mark_failed(
            session, row_id, "x" * 5000, max_attempts=5, backoff_seconds=1, backoff_max_seconds=1
        )
    row = state_of(db, row_id)
    assert row.last_error is not None and len(row.last_error) == masking.ERROR_MAX_CHARS


def test_backoff_delay_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(4)
    for attempts, nominal in [(1, 30), (2, 60), (3, 120), (10, 3600), (200, 3600)]:
        delays = [outbox.backoff_delay(attempts, base=30, cap=3600, rng=rng) for _ in range(50)]
        assert all(nominal <= d <= nominal * 1.1 for d in delays)
        assert len(set(delays)) > 1


def test_postpone_returns_rows_to_pending_without_an_attempt(db: Database) -> None:
    later = utcnow() + dt.timedelta(hours=2)
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    with db.begin() as session:
        outbox.claim_due(session, worker="w", limit=10, lease_seconds=60)
        outbox.postpone(session, [row_id], later, note="held: muted")
    row = state_of(db, row_id)
    assert row.state == "pending" and row.attempts == 0 and row.claimed_by is None
    assert row.next_attempt_at == later
    assert row.last_error == "held: muted"
    with db.begin() as session:
        assert outbox.claim_due(session, worker="w", limit=10, lease_seconds=60) == []


def test_postpone_offline_keeps_when_the_wait_for_the_nick_began(db: Database) -> None:
    start = utcnow() - dt.timedelta(minutes=10)
    later = start + dt.timedelta(minutes=5)
    due = start - dt.timedelta(minutes=1)
    with db.begin() as session:
        jo = add_user(session, "jo", "irc", ("jo_",))
        new = add_notification(session, jo, "irc", next_attempt_at=due).id
        # Back from a digest, with the start of an earlier, ended offline wait.
        held = add_notification(
            session,
            jo,
            "irc",
            next_attempt_at=due,
            hold_reason="digest",
            offline_since=start - dt.timedelta(hours=3),
        ).id

    def claim(now: dt.datetime) -> dict[int, outbox.ClaimedNotification]:
        with db.begin() as session:
            claimed = outbox.claim_due(
                session, worker="bot", contexts=["irc"], limit=10, lease_seconds=60, now=now
            )
            # On PostgreSQL the claim reads its rows itself: the load reads the same.
            assert claimed == outbox._load_claimed(session, [c.id for c in claimed])
        return {c.id: c for c in claimed}

    claimed = claim(start)
    assert claimed[new].offline_since is None and claimed[held].offline_since is None
    with db.begin() as session:
        assert outbox.postpone_offline(session, [new, held], start, note="offline", now=start) == 2
    for row_id in (new, held):
        row = state_of(db, row_id)
        assert row.hold_reason == "offline" and row.offline_since == start
        assert row.state == "pending" and row.last_error == "offline"
    claimed = claim(later)
    assert {c.offline_since for c in claimed.values()} == {start}
    with db.begin() as session:
        # Still offline: the wait goes on from its start. Another hold ends it.
        outbox.postpone_offline(session, [new], later, now=later)
        outbox.postpone(session, [held], later, reason="quiet_hours")
    assert state_of(db, new).offline_since == start
    claimed = claim(later)
    assert claimed[new].offline_since == start and claimed[held].offline_since is None
    with db.begin() as session:
        outbox.postpone_offline(session, [held], later, now=later)
    assert state_of(db, held).offline_since == later


def test_release_frees_only_the_workers_own_rows(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "jo")
        mine = add_notification(session, user).id
        theirs = add_notification(session, user).id
    with db.begin() as session:
        outbox.claim_due(session, worker="me", limit=1, lease_seconds=60)
        outbox.claim_due(session, worker="them", limit=1, lease_seconds=60)
        assert outbox.release(session, [mine, theirs], worker="me") == 1
    assert state_of(db, mine).state == "pending"
    assert state_of(db, theirs).state == "sending"


def test_dead_rows_are_listed_counted_and_requeued(db: Database) -> None:
    with db.begin() as session:
        user = add_user(session, "jo")
        dead = add_notification(session, user, state="dead", attempts=8, last_error="boom").id
        other_dead = add_notification(session, user, state="dead", attempts=8).id
        add_notification(session, user, state="sent")
        add_notification(session, user)
    with db.begin() as session:
        listed = outbox.list_dead(session, limit=10)
        counts = outbox.counts_by_state(session)
    assert {d.id for d in listed} == {dead, other_dead}
    assert next(d for d in listed if d.id == dead).last_error == "boom"
    assert counts == {"pending": 1, "sending": 0, "sent": 1, "failed": 0, "dead": 2}
    with db.begin() as session:
        assert outbox.requeue_dead(session, [dead]) == 1
    row = state_of(db, dead)
    assert row.state == "pending" and row.attempts == 0 and row.last_error is None
    with db.begin() as session:
        assert outbox.requeue_dead(session) == 1
        assert outbox.counts_by_state(session)["dead"] == 0


# -- groups (digests, rate limits) -----------------------------------------------------------


def test_claim_group_takes_every_waiting_row_of_the_user_and_context(db: Database) -> None:
    later = utcnow() + dt.timedelta(hours=1)
    with db.begin() as session:
        jo = add_user(session, "jo")
        al = add_user(session, "al", addresses=("al@example.org",))
        mine = [add_notification(session, jo, next_attempt_at=later).id for _ in range(3)]
        add_notification(session, al)
    with db.begin() as session:
        claimed = outbox.claim_group(
            session, worker="w", user_id=jo.id, context="email", lease_seconds=60
        )
    assert sorted(c.id for c in claimed) == mine
    assert all(state_of(db, i).state == "sending" for i in mine)
