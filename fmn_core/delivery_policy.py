"""The delivery policy: what becomes of a claimed (user, context) group before anything is sent.

:func:`decide` is pure: from the group's first row (the user's preference, mute and
confirmed destinations travel with every claimed row) and :class:`GroupStats`, it
says hold, dead, no destination, digest or send. :func:`apply` carries out the
decisions that settle rows without sending, on the outbox's state machine. The
daemon's senders and the IRC bot both call these two, so every context of a user
behaves alike; only sending is theirs.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    any_,
    bindparam,
    case,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from .models import Filter, Notification, NotificationState, utc_param, utcnow
from .outbox import WAITING_STATES, ClaimedNotification, mark_dead, mark_failed, postpone
from .schedule import DigestSchedule

__all__ = [
    "COUNT_ONLY_MAX_WAIT",
    "DISABLED_ERROR",
    "NO_ADDRESS_ERROR",
    "NO_ADDRESS_RETRY_SECONDS",
    "RATE_LIMIT_DIGEST_MINUTES",
    "Decision",
    "GroupKey",
    "GroupStats",
    "Settled",
    "apply",
    "decide",
    "group_stats",
]

#: A digest with only a count sends what it has after this long anyway.
COUNT_ONLY_MAX_WAIT = dt.timedelta(hours=24)

#: A rate-limited group is collected into a digest at most this often.
RATE_LIMIT_DIGEST_MINUTES = 15

#: ``last_error`` of rows whose context the user turned off (they go ``dead`` at once).
DISABLED_ERROR = "this context is turned off for the user; nothing was sent"

#: ``last_error`` of rows whose user has no confirmed destination for the context.
NO_ADDRESS_ERROR = "no confirmed address for this context; confirm one to receive these"

#: Rows without a confirmed destination are tried again this often (then ``dead``).
NO_ADDRESS_RETRY_SECONDS = 3600.0


#: A (user id, context) pair, or a (user id, context, lane) triple.
GroupKey = tuple[int, str] | tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """The outbox as seen by one (user, context) pair."""

    #: Rows not yet sent: pending, failed (waiting to retry) or being sent.
    waiting: int
    #: When the oldest of those rows was created (None when there are none).
    oldest_waiting: dt.datetime | None
    #: Rows sent within the last hour.
    sent_last_hour: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What a sender does with one claimed (user, context) group; see :func:`decide`.

    ``kind`` is one of:

    - ``"hold"``: postpone every row until ``until`` (not an attempt);
    - ``"dead"``: retrying cannot help; mark every row dead with ``note``;
    - ``"no_destination"``: a failed attempt for every row, retried after
      :data:`NO_ADDRESS_RETRY_SECONDS`;
    - ``"digest"``: send everything waiting in the group as one digest;
    - ``"send"``: send each row on its own.
    """

    kind: Literal["hold", "dead", "no_destination", "digest", "send"]
    #: When held rows are due again (only for ``"hold"``).
    until: dt.datetime | None = None
    #: Why: the postpone note or the ``last_error`` to record.
    note: str = ""
    #: Why, as ``Notification.hold_reason`` (``fmn_core.schedule.HOLD_REASONS``);
    #: derived from the kind and the note, so not part of equality.
    reason: str | None = field(default=None, compare=False)


def decide(
    head: ClaimedNotification,
    stats: GroupStats,
    now: dt.datetime,
    *,
    rate_limit_per_hour: int | None = None,
    waiting_in_claim: int = 1,
) -> Decision:
    """Decide what becomes of a claimed (user, context, lane) group; pure, no I/O.

    ``head`` is the group's first claimed row (the user's preference, and the
    lane, are the same on every row: see ``ClaimedNotification.lane``); ``stats``
    is :func:`group_stats` for the group and is only read for a digest or a rate
    limit. In order:

    - a muted user is held until the mute ends;
    - a context turned off is dead; no confirmed destination is a failed attempt;
    - the **digest** lane (a digest filter in a context with a digest schedule) is
      held until the schedule is due (``fmn_core.schedule.DigestSchedule``: the
      oldest waiting row old enough, ``digest_count`` rows waiting, or the daily
      local time), then sent as one digest;
    - the **instant** lane is held during the context's quiet hours until they end
      (the **urgent** lane is not); rows released together from quiet hours go as
      one digest when there are several;
    - a group whose ``sent_last_hour`` plus the ``waiting_in_claim`` rows claimed
      now exceeds ``rate_limit_per_hour`` is collected into a digest every
      :data:`RATE_LIMIT_DIGEST_MINUTES`;
    - anything else is sent row by row.
    """
    if head.muted_until is not None and head.muted_until > now:
        return Decision(
            "hold",
            head.muted_until,
            f"held: the user muted fmn until {head.muted_until:%Y-%m-%d %H:%M} UTC",
            "muted",
        )
    if not head.enabled:
        return Decision("dead", note=DISABLED_ERROR)
    if not head.destinations:
        return Decision("no_destination", note=NO_ADDRESS_ERROR, reason="no_address")
    lane = head.lane
    if lane == "instant" and head.quiet is not None:
        quiet_until = head.quiet.end_if_quiet(now)
        if quiet_until is not None:
            return Decision(
                "hold",
                quiet_until,
                f"held for quiet hours until {quiet_until:%Y-%m-%d %H:%M} UTC",
                "quiet_hours",
            )
    limited = (
        rate_limit_per_hour is not None
        and stats.sent_last_hour + waiting_in_claim > rate_limit_per_hour
    )
    if lane != "digest" and not limited:
        released = head.hold_reason == "quiet_hours" and waiting_in_claim > 1
        return Decision("digest" if released else "send")
    schedule = head.schedule if lane == "digest" else DigestSchedule()
    if limited:
        # A rate limit stretches a short window; it never shortens a longer one.
        schedule = DigestSchedule(
            max(schedule.minutes, RATE_LIMIT_DIGEST_MINUTES),
            schedule.count,
            schedule.at,
            schedule.timezone,
        )
    oldest = min(stats.oldest_waiting or head.created_at, head.created_at)
    until = schedule.due_at(oldest, count_only_max_wait=COUNT_ONLY_MAX_WAIT)
    count_reached = schedule.count > 0 and stats.waiting >= schedule.count
    if until <= now or count_reached:
        return Decision("digest")
    why = "digest" if lane == "digest" else "rate_limit"
    words = "a digest" if lane == "digest" else "a rate limit"
    return Decision("hold", until, f"held for {words} until {until:%Y-%m-%d %H:%M} UTC", why)


def group_stats(
    session: Session, groups: Iterable[GroupKey], now: dt.datetime | None = None
) -> dict[GroupKey, GroupStats]:
    """Waiting rows and the last hour's sends for each (user id, context) pair, or for
    each (user id, context, lane) triple: then a ``digest`` lane counts only the rows
    of digest filters (those a digest collects), the other lanes only the others."""
    wanted = set(groups)
    if not wanted:
        return {}
    moment = now if now is not None else utcnow()
    waiting: dict[tuple[int, str, bool], tuple[int, dt.datetime | None]] = {}
    sent: dict[tuple[int, str], int] = {}
    connection = session.connection()
    since = moment - dt.timedelta(hours=1)
    params = {
        "users": sorted({key[0] for key in wanted}),
        "contexts": sorted({key[1] for key in wanted}),
    }
    rows: Iterable[Sequence[Any]]
    if connection.dialect.name == "postgresql":
        # Once per claim: as driver SQL, with the users and contexts as two arrays,
        # there is no list of parameters to expand and no statement to compile.
        sql, fixed = _stats_sql(connection.dialect)
        rows = connection.exec_driver_sql(sql, {**fixed, **params, "since": utc_param(since)})
    else:
        rows = connection.execute(_stats_statement(), {**params, "since": since})
    for user_id, context, digest, count, oldest, recent in rows:
        if count:
            waiting[(user_id, context, bool(digest))] = (int(count), _aware(oldest))
        if recent:
            sent[(user_id, context)] = sent.get((user_id, context), 0) + int(recent)
    result: dict[GroupKey, GroupStats] = {}
    for key in wanted:
        user_id, context = key[0], key[1]
        parts = (True, False) if len(key) == 2 else ((key[2] == "digest"),)
        found = [waiting[(user_id, context, p)] for p in parts if (user_id, context, p) in waiting]
        oldest_times = [t for _, t in found if t is not None]
        result[key] = GroupStats(
            waiting=sum(c for c, _ in found),
            oldest_waiting=min(oldest_times) if oldest_times else None,
            sent_last_hour=sent.get((user_id, context), 0),
        )
    return result


@functools.cache
def _stats_statement() -> Any:
    """``group_stats``' one statement, built once: rows waiting and rows sent within the
    hour, per (user, context) and lane. A sender asks once per claim, at low rates once
    per message, and building the statement cost more than running it."""
    n = Notification.__table__.c
    return _stats_select(
        n.user_id.in_(bindparam("users", expanding=True)),
        n.context.in_(bindparam("contexts", expanding=True)),
    )


@functools.cache
def _stats_sql(dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """``_stats_statement`` on PostgreSQL as the driver's SQL, the users and the contexts
    each one array parameter; and the parameters fixed in it (the states)."""
    n = Notification.__table__.c
    statement = _stats_select(
        n.user_id == any_(bindparam("users", [0], type_=ARRAY(Integer))),
        n.context == any_(bindparam("contexts", [""], type_=ARRAY(String))),
    ).params(since=utcnow())
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    expanded = compiled.construct_expanded_state()
    run_by_run = ("users", "contexts", "since")
    fixed = {k: v for k, v in expanded.parameters.items() if k not in run_by_run}
    return expanded.statement, fixed


#: A claimed row being sent counts as waiting: it is not in the hour's sends yet.
_SENDING = NotificationState.SENDING.value


def _stats_select(of_users: Any, of_contexts: Any) -> Any:
    """Two counts in one statement: the rows waiting, by lane (the filter joined, to
    tell a digest's rows), and the hour's sends, counted alone. One grouping of both
    joined every sent row of the hour to its filter for nothing: at 500 mails a second
    to ten users that was 5,000 rows joined per claim, and twice the time."""
    n = Notification.__table__.c
    f = Filter.__table__.c
    # Whether a row belongs to a digest: its filter sends digests, or it is gone.
    in_digest = case((or_(f.id.is_(None), f.delivery == "digest"), 1), else_=0)
    waiting = (
        select(
            n.user_id,
            n.context,
            in_digest.label("digest"),
            func.count().label("waiting"),
            func.min(n.created_at).label("oldest"),
            literal(0).label("recent"),
        )
        .select_from(Notification.__table__.outerjoin(Filter.__table__, f.id == n.filter_id))
        .where(of_users, of_contexts, n.state.in_((*WAITING_STATES, _SENDING)))
        .group_by(n.user_id, n.context, in_digest)
    )
    recent = (
        select(
            n.user_id,
            n.context,
            literal(0),
            literal(0),
            null().cast(n.created_at.type),
            func.count(),
        )
        .where(
            of_users,
            of_contexts,
            n.state == NotificationState.SENT.value,
            n.sent_at >= bindparam("since", type_=n.sent_at.type),
        )
        .group_by(n.user_id, n.context)
    )
    return union_all(waiting, recent)


def _aware(value: Any) -> dt.datetime | None:
    # Aggregates bypass the column type: SQLite hands back a string or a naive value.
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class Settled:
    """What :func:`apply` did to a group's rows."""

    postponed: int = 0
    failed: int = 0
    dead: int = 0

    @property
    def rows(self) -> int:
        """How many rows were settled."""
        return self.postponed + self.failed + self.dead


def apply(
    session: Session,
    decision: Decision,
    ids: Sequence[int],
    *,
    max_attempts: int,
    now: dt.datetime,
    hold_at_most: dt.timedelta | None = None,
    no_destination_error: str = NO_ADDRESS_ERROR,
    retry_seconds: float = NO_ADDRESS_RETRY_SECONDS,
    worker: str | None = None,
) -> Settled | None:
    """Carry out a decision that settles rows without sending; None for ``send``/``digest``.

    ``hold`` postpones the rows (no attempt), looked at again after at most
    ``hold_at_most`` when given (so an unmute takes effect soon); ``dead`` marks
    them dead with the decision's note; ``no_destination`` counts a failed attempt
    retried every ``retry_seconds``, dead after ``max_attempts``, recorded as
    ``no_destination_error`` (the sender's wording for its kind of address). With
    ``worker``, rows that sender's claim no longer holds are left to their new
    holder, as for ``outbox.mark_failed``.
    """
    if decision.kind == "hold":
        assert decision.until is not None  # every hold says until when
        until = decision.until
        if hold_at_most is not None:
            until = min(until, now + hold_at_most)
        return Settled(
            postponed=postpone(
                session, ids, until, note=decision.note, reason=decision.reason, worker=worker
            )
        )
    if decision.kind == "dead":
        return Settled(dead=mark_dead(session, ids, decision.note, now=now, worker=worker))
    if decision.kind == "no_destination":
        states = [
            mark_failed(
                session,
                row_id,
                no_destination_error,
                max_attempts=max_attempts,
                backoff_seconds=retry_seconds,
                backoff_max_seconds=retry_seconds,
                now=now,
                reason="no_address",
                worker=worker,
            )
            for row_id in ids
        ]
        # A row another sender holds keeps its state, which counts as neither.
        return Settled(failed=states.count("failed"), dead=states.count("dead"))
    return None
