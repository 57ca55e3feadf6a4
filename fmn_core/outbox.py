"""The outbox: claiming due notifications, and recording what became of them.

A notification row moves ``pending -> sending -> sent``; a failed send goes to
``failed`` with a later ``next_attempt_at`` (exponential backoff with jitter)
and, after ``max_attempts``, to ``dead``, where it stays visible until an
operator re-queues it. ``postpone`` puts rows back to ``pending`` for later
without counting an attempt (a muted user, a digest window, an IRC user who is
offline).

Claiming takes a lease: ``claimed_by``/``claimed_until``. A sender that crashes
leaves its rows in ``sending``; once the lease has expired any sender may claim
them again. On PostgreSQL the claim locks rows with ``FOR UPDATE SKIP LOCKED``,
so several daemons share the work without waiting on each other; on SQLite the
claim's transaction already holds the database's single write lock.

What a sender needs to render and send is copied into frozen
:class:`ClaimedNotification` objects, so nothing lazy-loads once the claiming
transaction has ended. The daemon delivers every context but ``irc``; the IRC
bot claims ``irc`` rows with the same functions.

Writers of new rows call :func:`announce_new_rows` in the same transaction. On
PostgreSQL that is a ``NOTIFY`` on :data:`NEW_ROWS_CHANNEL`, delivered when the
transaction commits, so senders listening there (in any process or on any
host) claim the rows at once instead of at their next poll.

What to do with a claimed group is the delivery policy's
(:mod:`fmn_core.delivery_policy`); feeds read sent rows through
:mod:`fmn_core.feeds`; errors are masked by :mod:`fmn_core.masking`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from .db import is_postgres, run_on_driver
from .masking import scrub_error
from .models import (
    Destination,
    Filter,
    Notification,
    NotificationState,
    Preference,
    StoredMessage,
    User,
    utc_param,
    utc_read,
    utcnow,
)
from .schedule import DigestSchedule, Lane, QuietHours, lane_of
from .stored_messages import FactsCache, MessageRow

__all__ = [
    "ANNOUNCE_SQL",
    "FINISHED_STATES",
    "NEW_ROWS_CHANNEL",
    "WAITING_STATES",
    "ClaimedNotification",
    "DeadNotification",
    "announce_new_rows",
    "backoff_delay",
    "claim_due",
    "claim_group",
    "claim_ids",
    "counts_by_state",
    "due_ids",
    "list_dead",
    "mark_dead",
    "mark_failed",
    "mark_sent",
    "mark_sent_autocommitted",
    "postpone",
    "postpone_offline",
    "release",
    "requeue_dead",
]

log = logging.getLogger(__name__)

#: The PostgreSQL channel that announces committed outbox rows (``LISTEN`` to it).
NEW_ROWS_CHANNEL = "fmn_outbox"
#: The announcement itself (parameter: the channel); the writer also sends it as
#: the tail of its outbox insert.
ANNOUNCE_SQL = "SELECT pg_notify(%s::text, '')"

#: Retries wait up to this fraction longer than their nominal delay.
_JITTER = 0.1
#: The states of rows that wait for a send (a claim takes them when due).
WAITING_STATES = (NotificationState.PENDING.value, NotificationState.FAILED.value)
#: Nothing sends these again, unless an operator re-queues a dead one (until it is pruned).
FINISHED_STATES = (NotificationState.SENT.value, NotificationState.DEAD.value)
#: The ``hold_reason`` of rows the IRC bot holds for a nick that is not online.
_OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    """One claimed outbox row with everything needed to render and send it.

    ``destinations`` are the user's confirmed addresses for ``context``: private,
    so they are left out of ``repr``.
    """

    id: int
    message_id: str
    topic: str
    app: str
    summary: str
    url: str | None
    agent: str | None
    usernames: tuple[str, ...]
    packages: tuple[str, ...]
    severity: int
    user_id: int
    user: str
    context: str
    filter_name: str
    created_at: dt.datetime
    attempts: int
    #: Whether the user's preference for this context is (still) turned on.
    enabled: bool
    digest_minutes: int
    digest_count: int
    muted_until: dt.datetime | None
    destinations: tuple[str, ...] = field(default=(), repr=False)
    #: The user's action-link nonce: links rendered now carry it (``fmn_core.actions``).
    link_nonce: int = 0
    #: How the row's filter sends (``instant`` or ``digest``). A row whose filter
    #: is gone follows its context's digest, as every row did before revision 0007.
    delivery: str = "digest"
    #: The filter is urgent: its rows pass through quiet hours.
    urgent: bool = False
    #: The context's daily digest time (``HH:MM``) and the zones of its local times.
    digest_at: str | None = None
    digest_timezone: str = "UTC"
    quiet_from: str | None = None
    quiet_to: str | None = None
    quiet_timezone: str | None = None
    #: Why the row waited before this claim (``Notification.hold_reason``).
    hold_reason: str | None = None
    #: When the row's wait for an offline IRC nick began (:func:`postpone_offline`);
    #: None unless it waited for that before this claim.
    offline_since: dt.datetime | None = None

    @property
    def group(self) -> tuple[int, str]:
        """The (user id, context) pair rate limits work on."""
        return (self.user_id, self.context)

    @property
    def schedule(self) -> DigestSchedule:
        """When the context's digest goes out."""
        return DigestSchedule(
            self.digest_minutes, self.digest_count, self.digest_at, self.digest_timezone
        )

    @property
    def quiet(self) -> QuietHours | None:
        """The context's quiet hours, if it has any."""
        if self.quiet_from is None or self.quiet_to is None:
            return None
        return QuietHours(self.quiet_from, self.quiet_to, self.quiet_timezone or "UTC")

    @property
    def lane(self) -> Lane:
        """Which queue the row travels in: the digest, instant, or instant and urgent."""
        return lane_of(self.delivery, self.urgent, self.schedule)

    @property
    def lane_key(self) -> tuple[int, str, str]:
        """The (user id, context, lane) triple senders decide on together."""
        return (self.user_id, self.context, self.lane)

    @property
    def wants_digest(self) -> bool:
        """Whether the row waits for its context's digest."""
        return self.lane == "digest"


@dataclass(frozen=True, slots=True)
class DeadNotification:
    """A notification that exhausted its attempts (for operators)."""

    id: int
    message_id: str
    user: str
    context: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else utcnow()


def _due_condition(now: dt.datetime) -> Any:
    return or_(
        and_(Notification.state.in_(WAITING_STATES), Notification.next_attempt_at <= now),
        # Crash recovery: a sender took these and never came back.
        and_(
            Notification.state == NotificationState.SENDING.value,
            Notification.claimed_until < now,
        ),
    )


def _take(
    session: Session, ids: Sequence[int], *, worker: str, lease_seconds: float, now: dt.datetime
) -> list[ClaimedNotification]:
    if not ids:
        return []
    return _claim_where(
        session,
        Notification.id.in_(list(ids)),
        worker=worker,
        lease_seconds=lease_seconds,
        now=now,
    )


def _claim_where(
    session: Session, condition: Any, *, worker: str, lease_seconds: float, now: dt.datetime
) -> list[ClaimedNotification]:
    """Take the rows ``condition`` selects and load them: two statements in all.

    One ``UPDATE ... RETURNING`` takes the rows (``condition`` may be the locking
    sub-select of due rows), one ``SELECT`` reads everything a sender renders and
    decides from. A claim runs once per round, at low rates once per message, so
    every statement it saves is saved per message.
    """
    taken = list(
        session.scalars(
            update(Notification)
            .where(condition)
            .values(
                state=NotificationState.SENDING.value,
                claimed_by=worker,
                claimed_until=now + dt.timedelta(seconds=lease_seconds),
            )
            .returning(Notification.id)
            .execution_options(synchronize_session=False)
        )
    )
    return _load_claimed(session, taken)


@functools.cache
def _load_statement() -> Any:
    """``_load_claimed``'s statement, built once (parameter: ``ids``)."""
    columns, joined = _load_columns()
    n = Notification.__table__.c
    d = Destination.__table__.c
    p = Preference.__table__.c
    return (
        select(*columns, d.address)
        .select_from(
            joined.outerjoin(
                Destination.__table__, and_(d.preference_id == p.id, d.confirmed.is_(True))
            )
        )
        .where(n.id.in_(bindparam("ids", expanding=True)))
        .order_by(n.created_at, n.id, d.id)
    )


def _load_columns() -> tuple[list[Any], Any]:
    """What a claim loads of each row but its addresses (the columns ``_claimed_of``
    reads, in its order), and the joins they come from: a row whose filter or
    preference is gone is still loaded."""
    n = Notification.__table__.c
    u = User.__table__.c
    m = StoredMessage.__table__.c
    p = Preference.__table__.c
    f = Filter.__table__.c
    columns = [
        n.id,
        n.context,
        n.filter_name,
        n.created_at,
        n.attempts,
        n.hold_reason,
        u.id,
        u.name,
        u.muted_until,
        u.link_nonce,
        m.id,
        m.topic,
        m.body,
        m.headers,
        p.id,
        p.enabled,
        p.digest_minutes,
        p.digest_count,
        p.digest_at,
        p.digest_timezone,
        p.quiet_from,
        p.quiet_to,
        p.quiet_timezone,
        f.delivery,
        f.urgent,
        # Last, so that the other columns keep their places: one nullable timestamp
        # more per claimed row, read from the row the claim already reads.
        n.offline_since,
    ]
    joined = (
        Notification.__table__.join(User.__table__, u.id == n.user_id)
        .join(StoredMessage.__table__, m.id == n.message_id)
        .outerjoin(Preference.__table__, and_(p.user_id == n.user_id, p.context == n.context))
        .outerjoin(Filter.__table__, f.id == n.filter_id)
    )
    return columns, joined


def _load_claimed(session: Session, ids: Sequence[int]) -> list[ClaimedNotification]:
    """The claimed rows ``ids``, oldest first, in one statement.

    Columns, not entities: a sender claims hundreds of rows a second, and building
    ORM objects per row (the message's body and headers among them) cost more than
    the query. The user's preference, the filter's mode and the confirmed
    addresses come in the same statement, one result row per address.
    """
    if not ids:
        return []
    # One result row per confirmed address (or one without): fold them per notification.
    found: dict[int, tuple[Any, list[str]]] = {}
    # All rows in one fetch, not one call through the result per row.
    for row in session.connection().execute(_load_statement(), {"ids": list(ids)}).all():
        entry = found.get(row[0])
        if entry is None:
            entry = found[row[0]] = (row, [])
        if row[26] is not None:
            entry[1].append(row[26])
    return _claimed_of(found.values(), _as_read)


def _as_read(value: Any) -> Any:
    return value


def _claimed_of(
    found: Iterable[tuple[Sequence[Any], Sequence[str]]], timestamp: Callable[[Any], Any]
) -> list[ClaimedNotification]:
    """Claimed rows from ``_load_columns``' values and each row's confirmed addresses,
    in the order given; ``timestamp`` reads the timestamp columns (``utc_read`` for
    driver SQL, which no column type reads)."""
    facts = FactsCache()
    claimed: list[ClaimedNotification] = []
    for row, addresses in found:
        # The columns alone: an ORM object per row cost as much as reading its facts.
        message = MessageRow(row[10], row[11], row[12], row[13])
        fact = facts.get(message)
        has_preference = row[14] is not None
        has_filter = row[23] is not None
        claimed.append(
            ClaimedNotification(
                id=row[0],
                message_id=message.id,
                topic=message.topic,
                app=fact.app_name,
                # A schema whose summary property raised still gets a subject.
                summary=fact.summary or message.topic,
                url=fact.url,
                agent=fact.agent_name,
                usernames=tuple(sorted(fact.usernames)),
                packages=tuple(sorted(fact.packages)),
                severity=fact.severity,
                user_id=row[6],
                user=row[7],
                context=row[1],
                filter_name=row[2],
                created_at=timestamp(row[3]),
                attempts=row[4],
                enabled=bool(row[15]) if has_preference else False,
                digest_minutes=row[16] if has_preference else 0,
                digest_count=row[17] if has_preference else 0,
                muted_until=timestamp(row[8]),
                link_nonce=row[9] or 0,
                destinations=tuple(addresses),
                # A row whose filter is gone follows the context's digest.
                delivery=row[23] if has_filter else "digest",
                urgent=bool(row[24]) if has_filter else False,
                digest_at=row[18] if has_preference else None,
                digest_timezone=row[19] if has_preference else "UTC",
                quiet_from=row[20] if has_preference else None,
                quiet_to=row[21] if has_preference else None,
                quiet_timezone=row[22] if has_preference else None,
                hold_reason=row[5],
                # A value left from an earlier wait, which ended since, means nothing.
                offline_since=timestamp(row[25]) if row[5] == _OFFLINE else None,
            )
        )
    return claimed


def announce_new_rows(session: Session) -> None:
    """Wake the senders listening on :data:`NEW_ROWS_CHANNEL` when this transaction commits.

    PostgreSQL only (elsewhere senders poll); nothing is sent if the transaction
    rolls back, and several announcements in one transaction arrive as one.
    """
    if is_postgres(session):
        run_on_driver(session, ANNOUNCE_SQL, [NEW_ROWS_CHANNEL])


def claim_due(
    session: Session,
    *,
    worker: str,
    contexts: Sequence[str] | None = None,
    exclude_contexts: Sequence[str] = (),
    limit: int,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> list[ClaimedNotification]:
    """Claim up to ``limit`` due rows for ``worker`` and return them, oldest first.

    Due means pending or failed with ``next_attempt_at <= now``, or ``sending``
    with an expired lease. ``contexts`` limits the claim to those contexts,
    ``exclude_contexts`` leaves some out (the daemon leaves ``irc`` to the bot).
    """
    moment = _now(now)
    chosen = (tuple(contexts) if contexts is not None else None, tuple(exclude_contexts))
    until = moment + dt.timedelta(seconds=lease_seconds)
    connection = session.connection()
    if is_postgres(session):
        # One statement and one round trip: the claim's UPDATE returns what the load
        # would read. As driver SQL, with no statement to compile or column types to run.
        sql, fixed = _claim_and_load_sql(connection.dialect, *chosen)
        result = connection.exec_driver_sql(
            sql,
            {
                **fixed,
                "now": utc_param(moment),
                "limit": limit,
                "worker": worker,
                "until": utc_param(until),
            },
        )
        # RETURNING has no order: oldest first, as the load's ORDER BY.
        rows = sorted(result.all(), key=_created_and_id)
        return _claimed_of(((row, row[26]) for row in rows), utc_read)
    # SQLite has no UPDATE ... FROM a locking sub-select: the claim, then the load.
    taken = list(
        connection.scalars(
            _claim_due_statement(*chosen),
            {"now": moment, "limit": limit, "worker": worker, "until": until},
        )
    )
    return _load_claimed(session, taken)


def _created_and_id(row: Sequence[Any]) -> tuple[Any, Any]:
    return (row[3], row[0])


#: The parameters a claim passes run by run (the rest is fixed per statement).
_RUN_BY_RUN = ("now", "limit", "worker", "until")


@functools.cache
def _claim_and_load_sql(
    dialect: Dialect, contexts: tuple[str, ...] | None, exclude_contexts: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """PostgreSQL's claim and load in one statement: the driver's SQL, and the
    parameters fixed in it (the caller adds ``_RUN_BY_RUN``).

    ``UPDATE notifications ... FROM`` the load's columns (``_load_columns``) of the
    due rows (``_due_ids``, locked and skipped as in ``_claim_due_statement``),
    ``RETURNING`` them, the confirmed addresses as one array per row: it takes the
    rows the two statements would take and returns what the load would read.
    """
    table = cast(Table, Notification.__table__)
    n = table.c
    p = Preference.__table__.c
    d = Destination.__table__.c
    columns, joined = _load_columns()
    addresses = func.array(
        select(d.address)
        .where(d.preference_id == p.id, d.confirmed.is_(True))
        .order_by(d.id)
        .scalar_subquery()
    )
    # Placeholder values, so that the lists fixed in it (states, contexts) can be
    # rendered as parameters of their own.
    placeholders = {"now": utcnow(), "limit": 0, "worker": "", "until": utcnow()}
    loaded = (
        select(*columns, addresses)
        .select_from(joined)
        .where(n.id.in_(_due_ids(True, contexts, exclude_contexts).correlate(None)))
        .params(placeholders)
        .subquery("loaded")
    )
    statement = (
        update(table)
        .where(n.id == loaded.c[0])
        .values(_claim_values(n, placeholders))
        .returning(*loaded.c)
    )
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    expanded = compiled.construct_expanded_state()
    fixed = {k: v for k, v in expanded.parameters.items() if k not in _RUN_BY_RUN}
    return expanded.statement, fixed


def _claim_values(c: Any, placeholders: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a claim sets (parameters ``worker`` and ``until``)."""
    given = placeholders or {}
    return {
        "state": NotificationState.SENDING.value,
        "claimed_by": bindparam("worker", given.get("worker"), type_=c.claimed_by.type),
        "claimed_until": bindparam("until", given.get("until"), type_=c.claimed_until.type),
    }


def _due_ids(
    postgres: bool, contexts: tuple[str, ...] | None, exclude_contexts: tuple[str, ...]
) -> Any:
    """The ids of up to ``limit`` due rows, oldest due first (parameters ``now``,
    ``limit``); on PostgreSQL locked, skipping those another sender holds."""
    c = Notification.__table__.c
    now = bindparam("now", type_=c.next_attempt_at.type)
    due = select(c.id).where(
        or_(
            and_(c.state.in_(WAITING_STATES), c.next_attempt_at <= now),
            # Crash recovery: a sender took these and never came back.
            and_(c.state == NotificationState.SENDING.value, c.claimed_until < now),
        )
    )
    if contexts is not None:
        due = due.where(c.context.in_(contexts))
    if exclude_contexts:
        due = due.where(c.context.not_in(exclude_contexts))
    due = due.order_by(c.next_attempt_at, c.id).limit(bindparam("limit", type_=Integer))
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return due


@functools.cache
def _claim_due_statement(
    contexts: tuple[str, ...] | None, exclude_contexts: tuple[str, ...]
) -> Any:
    """``claim_due``'s claim on SQLite, built once per contexts.

    Building it (and its cache key) anew for every claim cost more CPU than
    running it; parameters: ``now``, ``limit``, ``worker``, ``until``.
    """
    table = cast(Table, Notification.__table__)
    c = table.c
    return (
        update(table)
        .where(c.id.in_(_due_ids(False, contexts, exclude_contexts)))
        .values(_claim_values(c))
        .returning(c.id)
    )


def due_ids(
    session: Session,
    *,
    contexts: Sequence[str] | None = None,
    exclude_contexts: Sequence[str] = (),
    limit: int,
    now: dt.datetime | None = None,
) -> list[int]:
    """The ids ``claim_due`` would claim (locked on PostgreSQL), without loading anything."""
    due = _due_select(
        session, contexts=contexts, exclude_contexts=exclude_contexts, limit=limit, now=_now(now)
    )
    return list(session.scalars(due))


def _due_select(
    session: Session,
    *,
    contexts: Sequence[str] | None,
    exclude_contexts: Sequence[str],
    limit: int,
    now: dt.datetime,
) -> Any:
    statement = select(Notification.id).where(_due_condition(now))
    if contexts is not None:
        statement = statement.where(Notification.context.in_(list(contexts)))
    if exclude_contexts:
        statement = statement.where(Notification.context.not_in(list(exclude_contexts)))
    statement = statement.order_by(Notification.next_attempt_at, Notification.id).limit(limit)
    if is_postgres(session):
        statement = statement.with_for_update(skip_locked=True)
    return statement


def claim_ids(
    session: Session,
    ids: Sequence[int],
    *,
    worker: str,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> list[ClaimedNotification]:
    """Claim exactly the rows ``ids`` that are still due (a sender isolating a bad row)."""
    moment = _now(now)
    if not ids:
        return []
    still_due = list(
        session.scalars(
            select(Notification.id).where(Notification.id.in_(list(ids)), _due_condition(moment))
        )
    )
    return _take(session, still_due, worker=worker, lease_seconds=lease_seconds, now=moment)


def claim_group(
    session: Session,
    *,
    worker: str,
    user_id: int,
    context: str,
    lease_seconds: float,
    limit: int = 1000,
    now: dt.datetime | None = None,
    digest_lane: bool | None = None,
) -> list[ClaimedNotification]:
    """Claim every waiting row of one user and context, due or not (a digest is due).

    ``digest_lane`` True takes only rows of digest filters (and rows whose filter
    is gone), False only the others: with a digest schedule, a digest collects
    its own lane and leaves instant rows (held for quiet hours, say) alone.
    """
    moment = _now(now)
    statement = (
        select(Notification.id)
        .where(
            Notification.user_id == user_id,
            Notification.context == context,
            Notification.state.in_(WAITING_STATES),
        )
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
    )
    if digest_lane is not None:
        digest_filters = select(Filter.id).where(Filter.delivery == "digest")
        in_digest = or_(
            Notification.filter_id.is_(None), Notification.filter_id.in_(digest_filters)
        )
        statement = statement.where(in_digest if digest_lane else ~in_digest)
    if is_postgres(session):
        statement = statement.with_for_update(skip_locked=True)
    ids = list(session.scalars(statement))
    return _take(session, ids, worker=worker, lease_seconds=lease_seconds, now=moment)


def mark_sent(
    session: Session | Connection,
    ids: Iterable[int],
    now: dt.datetime | None = None,
    *,
    note: str | None = None,
) -> int:
    """Record that these rows were delivered; returns how many rows changed.

    ``note`` (masked like errors) is kept in ``last_error``: the daemon notes
    there the destinations that failed when others took the message. One
    statement: on a connection that commits each statement
    (``Database.autocommit``) it needs no transaction of its own.
    """
    id_list = list(ids)
    if not id_list:
        return 0
    connection = session.connection() if isinstance(session, Session) else session
    result = connection.execute(
        _mark_sent_statement(),
        {
            "ids": id_list,
            "at": _now(now),
            "note": scrub_error(note) if note is not None else None,
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


#: ``mark_sent`` without a note, as PostgreSQL's driver runs it: one array parameter
#: for the ids instead of a parameter per id, and no statement to compile.
_MARK_SENT_SQL = (
    "UPDATE notifications SET state = %s, sent_at = %s, claimed_by = NULL, "
    "claimed_until = NULL, last_error = NULL, hold_reason = NULL WHERE id = ANY(%s)"
)


def mark_sent_autocommitted(
    connection: Connection, ids: Iterable[int], now: dt.datetime | None = None
) -> int:
    """``mark_sent`` (no note) on PostgreSQL's ``Database.autocommit`` connection.

    The senders' usual outcome, many times a second: as driver SQL it costs a third
    less CPU than ``mark_sent``'s compiled statement on the same connection.
    """
    id_list = list(ids)
    if not id_list:
        return 0
    result = connection.exec_driver_sql(
        _MARK_SENT_SQL, (NotificationState.SENT.value, _now(now).astimezone(dt.UTC), id_list)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@functools.cache
def _mark_sent_statement() -> Any:
    """``mark_sent``'s statement, built once (one per outcome group, at low rates per mail)."""
    table = cast(Table, Notification.__table__)
    c = table.c
    return (
        update(table)
        .where(c.id.in_(bindparam("ids", expanding=True)))
        .values(
            state=NotificationState.SENT.value,
            sent_at=bindparam("at", type_=c.sent_at.type),
            claimed_by=None,
            claimed_until=None,
            last_error=bindparam("note", type_=c.last_error.type),
            hold_reason=None,
        )
    )


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``attempts``-th failure: doubling, capped, jittered.

    The nominal delay is ``d = min(cap, base * 2**(attempts-1))``; the result is
    drawn from ``[d, 1.1 d]``, so a retry never comes sooner than configured,
    while rows that failed together (a mail server down) spread out instead of
    all arriving again in one burst.
    """
    exponent = max(attempts - 1, 0)
    delay = cap if exponent >= 63 else min(cap, base * (2**exponent))
    chooser = rng if rng is not None else random
    return delay * (1 + chooser.uniform(0, _JITTER))


def _addresses_of(session: Session, notification: Notification) -> list[str]:
    return list(
        session.scalars(
            select(Destination.address)
            .join(Preference, Preference.id == Destination.preference_id)
            .where(
                Preference.user_id == notification.user_id,
                Preference.context == notification.context,
            )
        )
    )


def _record_failure(session: Session, notification: Notification, error: str) -> None:
    """Count an attempt and keep its error, masked; the row is no longer claimed."""
    notification.attempts += 1
    notification.last_error = scrub_error(
        error, _addresses_of(session, notification), context=notification.context
    )
    notification.claimed_by = None
    notification.claimed_until = None


def _row(session: Session, notification_id: int, *, locked: bool = False) -> Notification:
    notification = session.get(
        Notification, notification_id, populate_existing=True, with_for_update=locked
    )
    if notification is None:
        raise LookupError(f"notification {notification_id} does not exist")
    return notification


def _held_by(notification: Notification, worker: str | None) -> bool:
    """Whether a failure ``worker`` reports may still be recorded on the row.

    A sender whose lease ran out (slow, or paused) is late: another sender may have
    taken the row since, and sent it. Its failure must not undo that, or the row
    would go out once more after its backoff (and its attempts be counted twice).
    """
    return worker is None or (
        notification.state == NotificationState.SENDING.value and notification.claimed_by == worker
    )


def mark_failed(
    session: Session,
    notification_id: int,
    error: str,
    *,
    max_attempts: int,
    backoff_seconds: float,
    backoff_max_seconds: float,
    now: dt.datetime | None = None,
    reason: str = "retry",
    worker: str | None = None,
) -> str:
    """Count a failed attempt; retry later with backoff, or give up (``dead``).

    Returns the row's new state (``failed`` or ``dead``). The error is stored with
    the user's addresses masked and cut to :data:`~fmn_core.masking.ERROR_MAX_CHARS`;
    ``reason`` is the row's ``hold_reason`` while it waits (``no_address``, say).
    With ``worker`` (a sender reporting its send), a row that sender no longer
    holds is left alone and its state returned as it is (see ``_held_by``).
    """
    notification = _row(session, notification_id, locked=worker is not None)
    if not _held_by(notification, worker):
        return notification.state
    moment = _now(now)
    _record_failure(session, notification, error)
    notification.hold_reason = reason
    if notification.attempts >= max_attempts:
        notification.state = NotificationState.DEAD.value
        notification.next_attempt_at = moment  # when it died: see ``mark_dead``
    else:
        notification.state = NotificationState.FAILED.value
        delay = backoff_delay(notification.attempts, base=backoff_seconds, cap=backoff_max_seconds)
        notification.next_attempt_at = moment + dt.timedelta(seconds=delay)
    session.flush()
    return notification.state


def mark_dead(
    session: Session,
    ids: Iterable[int],
    reason: str,
    *,
    now: dt.datetime | None = None,
    worker: str | None = None,
) -> int:
    """Give rows up at once, with ``reason`` (masked): retrying cannot help. Returns how many.

    The attempt is counted; an operator may re-queue the rows (:func:`requeue_dead`).
    A dead row's ``next_attempt_at`` is when it died: retention counts its days from
    there, so a row that waited long before dying is not pruned at once. With
    ``worker`` (a sender reporting its send), rows that sender no longer holds are
    left alone (see ``_held_by``).
    """
    moment = _now(now)
    count = 0
    for notification_id in ids:
        notification = _row(session, notification_id, locked=worker is not None)
        if not _held_by(notification, worker):
            continue
        _record_failure(session, notification, reason)
        notification.state = NotificationState.DEAD.value
        notification.next_attempt_at = moment
        notification.hold_reason = None
        count += 1
    session.flush()
    return count


def postpone(
    session: Session,
    ids: Iterable[int],
    until: dt.datetime,
    *,
    note: str | None = None,
    reason: str | None = None,
    worker: str | None = None,
) -> int:
    """Put rows back to ``pending`` until ``until`` without counting an attempt.

    ``note``, when given, is kept in ``last_error`` so operators see why a row
    waits (masked like errors); ``reason`` is kept in ``hold_reason`` (one of
    ``fmn_core.schedule.HOLD_REASONS``: what users are told). With ``worker`` (a
    sender reporting its send), rows that sender no longer holds are left alone
    (see ``_held_by``). Returns how many rows changed.
    """
    return _postpone(session, ids, until, note=note, reason=reason, extra={}, worker=worker)


def postpone_offline(
    session: Session,
    ids: Iterable[int],
    until: dt.datetime,
    *,
    note: str | None = None,
    now: dt.datetime | None = None,
    worker: str | None = None,
) -> int:
    """``postpone`` rows whose IRC nick is not online (``hold_reason`` ``offline``).

    Each row keeps when its wait for the nick began (``offline_since``, read back
    as ``ClaimedNotification.offline_since``), which ``bot.offline_hold_minutes``
    counts from: ``now`` for a row that did not wait for that before this claim
    (new, or back from a digest, quiet hours, a mute or a failed send), the time it
    has for one that did. ``worker`` as for ``postpone``. Returns how many rows changed.
    """
    c = Notification.__table__.c
    began = case(
        # SET reads the row as it was before this update: one still in its offline
        # wait keeps when that began.
        (and_(c.hold_reason == _OFFLINE, c.offline_since.is_not(None)), c.offline_since),
        else_=literal(_now(now), c.offline_since.type),
    )
    return _postpone(
        session,
        ids,
        until,
        note=note,
        reason=_OFFLINE,
        extra={"offline_since": began},
        worker=worker,
    )


def _postpone(
    session: Session,
    ids: Iterable[int],
    until: dt.datetime,
    *,
    note: str | None,
    reason: str | None,
    extra: dict[str, Any],
    worker: str | None = None,
) -> int:
    id_list = list(ids)
    if not id_list:
        return 0
    values: dict[str, Any] = {
        "state": NotificationState.PENDING.value,
        "next_attempt_at": until,
        "claimed_by": None,
        "claimed_until": None,
        "hold_reason": reason,
        **extra,
    }
    if note is not None:
        values["last_error"] = scrub_error(note)
    where = [Notification.id.in_(id_list)]
    if worker is not None:
        where.append(_still_held_by(worker))
    result = session.execute(
        update(Notification)
        .where(*where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _still_held_by(worker: str) -> Any:
    """``_held_by`` as a condition, for statements that change many rows at once."""
    return and_(
        Notification.state == NotificationState.SENDING.value,
        Notification.claimed_by == worker,
    )


def release(session: Session, ids: Iterable[int], *, worker: str) -> int:
    """Give claimed rows back at once (a sender stopping before it sent them).

    Only rows still held by ``worker`` are released; they become due again
    immediately, and no attempt is counted.
    """
    id_list = list(ids)
    if not id_list:
        return 0
    result = session.execute(
        update(Notification)
        .where(Notification.id.in_(id_list), _still_held_by(worker))
        .values(state=NotificationState.PENDING.value, claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_dead(session: Session, limit: int = 100) -> list[DeadNotification]:
    """The most recent dead notifications, newest first."""
    rows = session.execute(
        select(Notification, User.name)
        .join(User, User.id == Notification.user_id)
        .where(Notification.state == NotificationState.DEAD.value)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    ).all()
    return [
        DeadNotification(
            id=n.id,
            message_id=n.message_id,
            user=name,
            context=n.context,
            attempts=n.attempts,
            last_error=n.last_error,
            created_at=n.created_at,
        )
        for n, name in rows
    ]


def requeue_dead(
    session: Session, ids: Iterable[int] | None = None, now: dt.datetime | None = None
) -> int:
    """Make dead rows (all, or those ``ids``) pending again with fresh attempts."""
    statement = update(Notification).where(Notification.state == NotificationState.DEAD.value)
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return 0
        statement = statement.where(Notification.id.in_(id_list))
    result = session.execute(
        statement.values(
            state=NotificationState.PENDING.value,
            attempts=0,
            next_attempt_at=_now(now),
            last_error=None,
            hold_reason=None,
            claimed_by=None,
            claimed_until=None,
        ).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def counts_by_state(session: Session) -> dict[str, int]:
    """How many rows are in each state (every state listed, zeros included)."""
    counts = dict.fromkeys((s.value for s in NotificationState), 0)
    for state, count in session.execute(
        select(Notification.state, func.count()).group_by(Notification.state)
    ):
        counts[state] = count
    return counts
