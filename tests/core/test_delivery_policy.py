"""The delivery policy: decide (pure), apply (on the outbox), and the group stats it reads."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

from sqlalchemy import select

from core.test_outbox import add_notification, add_user, state_of
from fmn_core import delivery_policy, outbox
from fmn_core.db import Database
from fmn_core.models import Filter, Preference, utcnow

# -- decide: the delivery policy both senders share ------------------------------------

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
NO_STATS = delivery_policy.GroupStats(waiting=0, oldest_waiting=None, sent_last_hour=0)


def claimed(**changes: Any) -> outbox.ClaimedNotification:
    """A claimed row of a user with a confirmed address and no digest, made a minute ago."""
    fields: dict[str, Any] = {
        "id": 1,
        "message_id": "m-1",
        "topic": "org.fedoraproject.prod.bodhi.update.comment",
        "app": "bodhi",
        "summary": "a summary",
        "url": None,
        "agent": None,
        "usernames": (),
        "packages": (),
        "severity": 20,
        "user_id": 7,
        "user": "jo",
        "context": "email",
        "filter_name": "mine",
        "created_at": NOW - dt.timedelta(minutes=1),
        "attempts": 0,
        "enabled": True,
        "digest_minutes": 0,
        "digest_count": 0,
        "muted_until": None,
        "destinations": ("jo@example.org",),
    }
    fields.update(changes)
    return outbox.ClaimedNotification(**fields)


def test_decide_sends_each_row_without_a_policy() -> None:
    assert delivery_policy.decide(claimed(), NO_STATS, NOW).kind == "send"


def test_decide_holds_a_muted_user_until_the_mute_ends() -> None:
    until = NOW + dt.timedelta(hours=2)
    decision = delivery_policy.decide(claimed(muted_until=until, enabled=False), NO_STATS, NOW)
    assert decision == delivery_policy.Decision(
        "hold", until, "held: the user muted fmn until 2026-05-01 14:00 UTC"
    )


def test_decide_ignores_a_mute_that_has_ended() -> None:
    decision = delivery_policy.decide(claimed(muted_until=NOW), NO_STATS, NOW)
    assert decision.kind == "send"


def test_decide_kills_rows_of_a_context_turned_off() -> None:
    decision = delivery_policy.decide(claimed(enabled=False, destinations=()), NO_STATS, NOW)
    assert decision == delivery_policy.Decision("dead", None, delivery_policy.DISABLED_ERROR)


def test_decide_fails_rows_without_a_confirmed_destination() -> None:
    decision = delivery_policy.decide(claimed(destinations=(), digest_minutes=5), NO_STATS, NOW)
    assert decision == delivery_policy.Decision(
        "no_destination", None, delivery_policy.NO_ADDRESS_ERROR
    )


def test_decide_holds_a_digest_until_the_oldest_waiting_row_is_old_enough() -> None:
    oldest = NOW - dt.timedelta(minutes=20)
    stats = delivery_policy.GroupStats(waiting=3, oldest_waiting=oldest, sent_last_hour=0)
    decision = delivery_policy.decide(claimed(digest_minutes=30), stats, NOW)
    assert decision == delivery_policy.Decision(
        "hold", oldest + dt.timedelta(minutes=30), "held for a digest until 2026-05-01 12:10 UTC"
    )
    assert delivery_policy.decide(claimed(digest_minutes=20), stats, NOW).kind == "digest"


def test_decide_sends_a_digest_once_digest_count_rows_wait() -> None:
    stats = delivery_policy.GroupStats(waiting=5, oldest_waiting=NOW, sent_last_hour=0)
    assert (
        delivery_policy.decide(claimed(digest_minutes=60, digest_count=5), stats, NOW).kind
        == "digest"
    )
    fewer = delivery_policy.GroupStats(waiting=4, oldest_waiting=NOW, sent_last_hour=0)
    held = delivery_policy.decide(claimed(digest_minutes=60, digest_count=5), fewer, NOW)
    assert held.kind == "hold"


def test_decide_count_only_digest_waits_at_most_a_day() -> None:
    head = claimed(digest_count=10, created_at=NOW - dt.timedelta(hours=1))
    stats = delivery_policy.GroupStats(
        waiting=2, oldest_waiting=NOW - dt.timedelta(hours=3), sent_last_hour=0
    )
    decision = delivery_policy.decide(head, stats, NOW)
    assert decision.kind == "hold"
    assert decision.until == NOW - dt.timedelta(hours=3) + delivery_policy.COUNT_ONLY_MAX_WAIT
    day_old = delivery_policy.GroupStats(
        waiting=2, oldest_waiting=NOW - delivery_policy.COUNT_ONLY_MAX_WAIT, sent_last_hour=0
    )
    assert delivery_policy.decide(head, day_old, NOW).kind == "digest"


def test_decide_rate_limit_collapses_into_a_digest() -> None:
    stats = delivery_policy.GroupStats(waiting=3, oldest_waiting=NOW, sent_last_hour=9)
    under = delivery_policy.decide(
        claimed(), stats, NOW, rate_limit_per_hour=10, waiting_in_claim=1
    )
    assert under.kind == "send"
    over = delivery_policy.decide(
        claimed(created_at=NOW), stats, NOW, rate_limit_per_hour=10, waiting_in_claim=2
    )
    until = NOW + dt.timedelta(minutes=delivery_policy.RATE_LIMIT_DIGEST_MINUTES)
    assert over == delivery_policy.Decision(
        "hold", until, f"held for a rate limit until {until:%Y-%m-%d %H:%M} UTC"
    )
    late = delivery_policy.GroupStats(
        waiting=3,
        oldest_waiting=NOW - dt.timedelta(minutes=delivery_policy.RATE_LIMIT_DIGEST_MINUTES),
        sent_last_hour=50,
    )
    assert delivery_policy.decide(claimed(), late, NOW, rate_limit_per_hour=10).kind == "digest"
    # No limit given (the bot): never rate limited.
    assert delivery_policy.decide(claimed(), late, NOW).kind == "send"


def test_decide_rate_limit_stretches_a_short_digest_window() -> None:
    stats = delivery_policy.GroupStats(waiting=3, oldest_waiting=NOW, sent_last_hour=50)
    decision = delivery_policy.decide(
        claimed(digest_minutes=5, created_at=NOW), stats, NOW, rate_limit_per_hour=10
    )
    until = NOW + dt.timedelta(minutes=delivery_policy.RATE_LIMIT_DIGEST_MINUTES)
    assert decision == delivery_policy.Decision(
        "hold", until, f"held for a digest until {until:%Y-%m-%d %H:%M} UTC"
    )


def test_group_stats_counts_waiting_rows_and_recent_sends(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo")
        old = now - dt.timedelta(minutes=30)
        add_notification(session, user, created_at=old)
        add_notification(session, user, state="failed")
        add_notification(session, user, state="sent", sent_at=now - dt.timedelta(minutes=10))
        add_notification(session, user, state="sent", sent_at=now - dt.timedelta(hours=2))
        add_notification(session, user, state="dead")
        key = (user.id, "email")
    with db.begin() as session:
        stats = delivery_policy.group_stats(session, [key, (user.id, "push")], now=now)
    assert stats[key].waiting == 2
    assert stats[key].sent_last_hour == 1
    assert stats[key].oldest_waiting == old
    assert stats[(user.id, "push")] == delivery_policy.GroupStats(0, None, 0)


def test_group_stats_on_postgresql_reads_what_its_portable_statement_reads(
    db: Database,
) -> None:
    # PostgreSQL runs group_stats as driver SQL (users and contexts as arrays): the
    # figures must be those of the statement SQLite runs, lanes and users apart.

    now = utcnow()
    with db.begin() as session:
        jo, al = add_user(session, "jo"), add_user(session, "al")
        add_user(session, "jo", "push", ("p",))
        preference = session.scalars(
            select(Preference).where(Preference.user_id == jo.id, Preference.context == "email")
        ).one()
        digest = Filter(preference_id=preference.id, name="later", delivery="digest")
        instant = Filter(preference_id=preference.id, name="now", delivery="instant")
        session.add_all([digest, instant])
        session.flush()
        add_notification(session, jo, filter_id=instant.id, created_at=now - dt.timedelta(hours=4))
        for user in (jo, al):
            add_notification(session, user, created_at=now - dt.timedelta(minutes=20))
            add_notification(session, user, "push", state="failed")
            add_notification(session, user, state="sent", sent_at=now - dt.timedelta(minutes=5))
        add_notification(session, jo, filter_id=digest.id, created_at=now - dt.timedelta(hours=3))
        add_notification(session, jo, filter_id=digest.id, state="sending")
        add_notification(session, al, state="sent", sent_at=now - dt.timedelta(hours=2))
        keys = [(jo.id, "email"), (al.id, "email"), (jo.id, "push"), (al.id, "sms")]
    with db.begin() as session:
        stats = delivery_policy.group_stats(session, keys, now=now)
        lanes = [(jo.id, "email", "digest"), (jo.id, "email", "instant")]
        by_lane = delivery_policy.group_stats(session, lanes, now=now)
        portable = session.connection().execute(
            delivery_policy._stats_statement(),
            {
                "users": [jo.id, al.id],
                "contexts": ["email", "push", "sms"],
                "since": now - dt.timedelta(hours=1),
            },
        )
        rows = sorted(
            (u, c, int(d), int(n), delivery_policy._aware(o), int(r))
            for u, c, d, n, o, r in portable
        )
    assert stats[(jo.id, "email")] == delivery_policy.GroupStats(4, now - dt.timedelta(hours=4), 1)
    assert stats[(al.id, "email")] == delivery_policy.GroupStats(
        1, now - dt.timedelta(minutes=20), 1
    )
    assert stats[(al.id, "sms")] == delivery_policy.GroupStats(0, None, 0)
    # A row whose filter is gone is the digest's.
    assert by_lane[lanes[0]] == delivery_policy.GroupStats(3, now - dt.timedelta(hours=3), 1)
    assert by_lane[lanes[1]] == delivery_policy.GroupStats(1, now - dt.timedelta(hours=4), 1)
    # The statement's rows carry either a lane's waiting rows or the hour's sends.
    for user_id, context, digest_lane, waiting, oldest, _ in rows:
        key = (user_id, context, "digest" if digest_lane else "instant")
        if context == "email" and user_id == jo.id and waiting:
            assert (by_lane[key].waiting, by_lane[key].oldest_waiting) == (waiting, oldest)
    sent = {(u, c): 0 for u, c, *_ in rows}
    for user_id, context, *_, recent in rows:
        sent[(user_id, context)] += recent
    asked = {key: figure for key, figure in sent.items() if key in stats}
    assert {key: stats[key].sent_last_hour for key in asked} == asked
    assert len(asked) == 3


# -- apply: one applier of decisions for every sender ----------------------------------


def test_apply_settles_hold_dead_and_no_destination_and_leaves_sending_to_the_sender(
    db: Database,
) -> None:
    now = utcnow()
    with db.begin() as session:
        jo = add_user(session, "jo")
        held, dead, missing, sent = (
            [add_notification(session, jo).id for _ in range(2)] for _ in range(4)
        )
    hold = delivery_policy.Decision("hold", now + dt.timedelta(hours=5), "held: muted")
    with db.begin() as session:
        settled = delivery_policy.apply(
            session, hold, held, max_attempts=3, now=now, hold_at_most=dt.timedelta(minutes=1)
        )
        assert settled == delivery_policy.Settled(postponed=2)
        gone = delivery_policy.Decision("dead", note="turned off")
        assert delivery_policy.apply(session, gone, dead, max_attempts=3, now=now) == (
            delivery_policy.Settled(dead=2)
        )
        lost = delivery_policy.Decision("no_destination", note="ignored")
        settled = delivery_policy.apply(
            session, lost, missing, max_attempts=1, now=now, no_destination_error="no nick"
        )
        assert settled is not None and settled.dead == 2 and settled.rows == 2
        for decision in (delivery_policy.Decision("send"), delivery_policy.Decision("digest")):
            assert delivery_policy.apply(session, decision, sent, max_attempts=3, now=now) is None
    for row_id in held:
        row = state_of(db, row_id)
        assert row.state == "pending" and row.attempts == 0
        # Held at most a minute, though the decision said five hours.
        assert row.next_attempt_at <= now + dt.timedelta(minutes=1)
    for row_id in dead:
        row = state_of(db, row_id)
        assert (row.state, row.attempts, row.last_error) == ("dead", 1, "turned off")
    for row_id in missing:
        assert (state_of(db, row_id).state, state_of(db, row_id).last_error) == ("dead", "no nick")
    assert {state_of(db, row_id).state for row_id in sent} == {"pending"}


def test_apply_no_destination_retries_until_max_attempts(db: Database) -> None:
    now = utcnow()
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    lost = delivery_policy.Decision("no_destination")
    with db.begin() as session:
        settled = delivery_policy.apply(session, lost, [row_id], max_attempts=2, now=now)
    assert settled == delivery_policy.Settled(failed=1)
    row = state_of(db, row_id)
    assert row.state == "failed" and row.last_error == delivery_policy.NO_ADDRESS_ERROR
    expected = now + dt.timedelta(seconds=delivery_policy.NO_ADDRESS_RETRY_SECONDS)
    assert row.next_attempt_at >= expected


def test_apply_with_a_worker_leaves_rows_another_sender_took_since(db: Database) -> None:
    with db.begin() as session:
        jo = add_user(session, "jo")
        ids = [add_notification(session, jo).id for _ in range(3)]
    now = utcnow()
    with db.begin() as session:
        late = outbox.claim_ids(session, ids, worker="late", lease_seconds=60, now=now)
        assert len(late) == 3
    later = now + dt.timedelta(seconds=61)
    with db.begin() as session:
        # The late sender's lease ran out: its rows are due again, for another sender.
        taken = outbox.claim_due(
            session, worker="new", contexts=["email"], limit=10, lease_seconds=60, now=later
        )
        assert sorted(r.id for r in taken) == ids
        outbox.mark_sent(session, ids)
    decisions = (
        delivery_policy.Decision("hold", later + dt.timedelta(hours=1), "held: muted"),
        delivery_policy.Decision("dead", note="turned off"),
        delivery_policy.Decision("no_destination"),
    )
    for decision in decisions:
        with db.begin() as session:
            settled = delivery_policy.apply(
                session, decision, ids, max_attempts=1, now=later, worker="late"
            )
        assert settled == delivery_policy.Settled(), decision.kind
    for row_id in ids:
        row = state_of(db, row_id)
        assert (row.state, row.attempts, row.last_error) == ("sent", 0, None)


def test_mark_dead_counts_the_attempt_masks_the_reason_and_can_be_requeued(db: Database) -> None:
    with db.begin() as session:
        jo = add_user(session, "jo", addresses=("jo@example.org",))
        row_id = add_notification(session, jo).id
    with db.begin() as session:
        assert outbox.mark_dead(session, [row_id], "refused jo@example.org") == 1
    row = state_of(db, row_id)
    assert (row.state, row.attempts, row.claimed_by) == ("dead", 1, None)
    assert row.last_error is not None and "jo@example.org" not in row.last_error
    with db.begin() as session:
        assert outbox.requeue_dead(session, [row_id]) == 1
    assert state_of(db, row_id).state == "pending"


_STATES = ("pending", "failed", "sending", "sent", "dead")


def test_group_stats_match_a_count_in_python_of_a_mix_of_rows_and_lanes(db: Database) -> None:
    now = utcnow().replace(microsecond=0)
    rng = random.Random(26)
    rows: list[tuple[int, str, str | None, str, dt.datetime, dt.datetime | None]] = []
    with db.begin() as session:
        users = [add_user(session, f"u{n}") for n in range(3)]
        for user in users:
            add_user(session, user.name, "push", ("p",))
        filters: dict[tuple[int, str], list[tuple[int | None, str | None]]] = {}
        for user, context in itertools.product(users, ("email", "push")):
            preference = session.scalars(
                select(Preference).where(
                    Preference.user_id == user.id, Preference.context == context
                )
            ).one()
            made = [
                Filter(preference_id=preference.id, name=f"{context}-{lane}", delivery=lane)
                for lane in ("digest", "instant", "urgent")
            ]
            session.add_all(made)
            session.flush()
            filters[(user.id, context)] = [(f.id, f.delivery) for f in made] + [(None, None)]
        for user, context in itertools.product(users, ("email", "push")):
            for _ in range(rng.randrange(0, 12)):
                filter_id, lane = rng.choice(filters[(user.id, context)])
                state = rng.choice(_STATES)
                created = now - dt.timedelta(minutes=rng.randrange(1, 300))
                sent_at = (
                    now - dt.timedelta(minutes=rng.choice((5, 59, 61, 200)))
                    if state == "sent"
                    else None
                )
                add_notification(
                    session,
                    user,
                    context,
                    filter_id=filter_id,
                    state=state,
                    created_at=created,
                    sent_at=sent_at,
                )
                rows.append((user.id, context, lane, state, created, sent_at))
        # A lane with nothing but sent rows: u2's push.
        for minutes in (1, 30):
            add_notification(
                session, users[2], "push", state="sent", sent_at=now - dt.timedelta(minutes=minutes)
            )
            rows.append(
                (users[2].id, "push", None, "sent", now, now - dt.timedelta(minutes=minutes))
            )
        user_ids = [u.id for u in users]
    keys2 = [(u, c) for u in user_ids for c in ("email", "push", "sms")]
    keys3 = [(u, c, lane) for u, c in keys2 for lane in ("digest", "instant", "urgent")]
    with db.begin() as session:
        got2 = delivery_policy.group_stats(session, keys2, now=now)
        got3 = delivery_policy.group_stats(session, keys3, now=now)

    def expected(user_id: int, context: str, lane: str | None) -> delivery_policy.GroupStats:
        mine = [r for r in rows if r[0] == user_id and r[1] == context]
        # A row whose filter is gone (None) belongs to the digest lane.
        waiting = [
            r
            for r in mine
            if r[3] in ("pending", "failed", "sending")
            and (lane is None or (lane == "digest") == (r[2] in (None, "digest")))
        ]
        sent = [
            r
            for r in mine
            if r[3] == "sent" and r[5] is not None and r[5] >= now - dt.timedelta(hours=1)
        ]
        return delivery_policy.GroupStats(
            waiting=len(waiting),
            oldest_waiting=min((r[4] for r in waiting), default=None),
            sent_last_hour=len(sent),
        )

    assert got2 == {k: expected(k[0], k[1], None) for k in keys2}
    assert got3 == {k: expected(k[0], k[1], k[2]) for k in keys3}
    assert got2[(user_ids[2], "push")].sent_last_hour >= 2
